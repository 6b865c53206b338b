//! A mirror's package index (`index.json` of the index manifest's blob): any bytes, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = sf_spack::index::Index::parse(data) {
        let _ = index.len();
    }
});
