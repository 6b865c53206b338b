//! Spec and key manifests of a remote mirror, cleartext-signed or not, and its key index: any
//! bytes, never a panic; what parses gives a blob key or a clear error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = sf_spack::manifest::ManifestFile::parse(data) {
        for record in &file.manifest.data {
            let _ = record.blob_key();
        }
        let _ = file.manifest.to_spack_json();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sf_spack::manifest::split_clearsigned(text);
    }
    let _ = sf_spack::manifest::KeyIndex::parse(data);
});
