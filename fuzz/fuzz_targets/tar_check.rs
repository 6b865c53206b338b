//! The member checks a published tarball passes before it is extracted or published: any bytes,
//! never a panic, only a verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sf_archive::extract::check_stream(std::path::Path::new("fuzz.tar.gz"), data);
});
