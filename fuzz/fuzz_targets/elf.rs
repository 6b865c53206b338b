//! The ELF reader and the in-place RPATH rewrite: any bytes, never a panic; every RPATH found lies
//! inside the file, and its rewrite is exactly as long as the original.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(rpaths)) = sf_archive::elf::read_rpaths(&mut Cursor::new(data)) else {
        return;
    };
    for r in rpaths {
        let end = r.offset as usize + r.value.len();
        assert!(end <= data.len(), "an RPATH past the end of the file");
        let shorter = &r.value[..r.value.len() / 2];
        let patch = sf_archive::elf::in_place(&r, shorter).expect("a shorter RPATH always fits");
        assert_eq!(patch.len(), r.value.len());
        let text = String::from_utf8_lossy(&r.value);
        let relocator = sf_archive::relocate::Relocator::new(std::path::Path::new("/v"), &[]);
        let _ = relocator.rewrite_rpath("lib/x.so", &text);
    }
});
