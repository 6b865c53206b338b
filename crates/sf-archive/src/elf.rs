//! Just enough ELF to find and rewrite a file's RPATH/RUNPATH strings.
//!
//! The dynamic section is found through the program headers (what the loader reads, so section
//! headers may be stripped), the string table through `DT_STRTAB` mapped by the `PT_LOAD`
//! segments. Rewrites happen in place: the new string is written over the old one and padded
//! with NULs, so no offset in the file moves. That only works when the new string is no longer
//! than the old one, which a padded Spack install tree guarantees. 32- and 64-bit, either byte
//! order.

use std::io::{self, Read, Seek, SeekFrom};

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_STRTAB: u64 = 5;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;
/// Longest RPATH string read; real ones are a few KiB at most.
const MAX_STRING: usize = 64 * 1024;

/// Which dynamic tag held the string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpathTag {
    Rpath,
    Runpath,
}

/// One RPATH or RUNPATH string of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpathString {
    pub tag: RpathTag,
    /// File offset of the string's first byte.
    pub offset: u64,
    /// The string, without its NUL.
    pub value: Vec<u8>,
}

/// Whether the first bytes of a file are the ELF magic.
pub fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

#[derive(Clone, Copy)]
struct Format {
    wide: bool,
    big: bool,
}

impl Format {
    fn uint(&self, b: &[u8], at: usize, size: usize) -> io::Result<u64> {
        let s = b
            .get(at..at + size)
            .ok_or_else(|| bad("truncated header"))?;
        let mut v = 0u64;
        if self.big {
            for &x in s {
                v = (v << 8) | u64::from(x);
            }
        } else {
            for &x in s.iter().rev() {
                v = (v << 8) | u64::from(x);
            }
        }
        Ok(v)
    }
    fn word(&self, b: &[u8], at: usize) -> io::Result<u64> {
        self.uint(b, at, if self.wide { 8 } else { 4 })
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed ELF: {msg}"))
}

fn read_at<R: Read + Seek>(f: &mut R, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(bad("a header points past the end of the file"));
    }
    Ok(buf)
}

/// The RPATH/RUNPATH strings of an ELF file (empty for a static executable or an object without
/// them). `Ok(None)` when the file is not ELF at all.
pub fn read_rpaths<R: Read + Seek>(f: &mut R) -> io::Result<Option<Vec<RpathString>>> {
    f.seek(SeekFrom::Start(0))?;
    let mut ident = [0u8; 64];
    let n = f.by_ref().take(64).read(&mut ident)?;
    if n < 16 || !is_elf(&ident) {
        return Ok(None);
    }
    let fmt = match (ident[4], ident[5]) {
        (1, 1) => Format {
            wide: false,
            big: false,
        },
        (1, 2) => Format {
            wide: false,
            big: true,
        },
        (2, 1) => Format {
            wide: true,
            big: false,
        },
        (2, 2) => Format {
            wide: true,
            big: true,
        },
        _ => return Err(bad("unknown class or byte order")),
    };
    let head = read_at(f, 0, if fmt.wide { 64 } else { 52 })?;
    let (phoff, phentsize, phnum) = if fmt.wide {
        (
            fmt.uint(&head, 0x20, 8)?,
            fmt.uint(&head, 0x36, 2)?,
            fmt.uint(&head, 0x38, 2)?,
        )
    } else {
        (
            fmt.uint(&head, 0x1c, 4)?,
            fmt.uint(&head, 0x2a, 2)?,
            fmt.uint(&head, 0x2c, 2)?,
        )
    };
    if phnum == 0 {
        return Ok(Some(Vec::new()));
    }
    if phentsize < if fmt.wide { 56 } else { 32 } || phnum > 4096 {
        return Err(bad("program header table"));
    }
    let table = read_at(f, phoff, (phentsize * phnum) as usize)?;
    let mut loads = Vec::new(); // (vaddr, filesz, offset)
    let mut dynamic = None; // (offset, filesz)
    for i in 0..phnum as usize {
        let ph = &table[i * phentsize as usize..(i + 1) * phentsize as usize];
        let p_type = fmt.uint(ph, 0, 4)?;
        let (offset, vaddr, filesz) = if fmt.wide {
            (
                fmt.uint(ph, 8, 8)?,
                fmt.uint(ph, 16, 8)?,
                fmt.uint(ph, 32, 8)?,
            )
        } else {
            (
                fmt.uint(ph, 4, 4)?,
                fmt.uint(ph, 8, 4)?,
                fmt.uint(ph, 16, 4)?,
            )
        };
        match p_type as u32 {
            PT_LOAD => loads.push((vaddr, filesz, offset)),
            PT_DYNAMIC => dynamic = Some((offset, filesz)),
            _ => {}
        }
    }
    let Some((dyn_off, dyn_size)) = dynamic else {
        return Ok(Some(Vec::new()));
    };
    if dyn_size > 1 << 20 {
        return Err(bad("dynamic segment too large"));
    }
    let dynamic = read_at(f, dyn_off, dyn_size as usize)?;
    let entry = if fmt.wide { 16 } else { 8 };
    let mut strtab = None;
    let mut wanted = Vec::new();
    for e in dynamic.chunks_exact(entry) {
        let tag = fmt.word(e, 0)?;
        let val = fmt.word(e, entry / 2)?;
        match tag {
            DT_NULL => break,
            DT_STRTAB => strtab = Some(val),
            DT_RPATH => wanted.push((RpathTag::Rpath, val)),
            DT_RUNPATH => wanted.push((RpathTag::Runpath, val)),
            _ => {}
        }
    }
    if wanted.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let strtab = strtab.ok_or_else(|| bad("RPATH without a string table"))?;
    let strtab_off = loads
        .iter()
        .find(|(vaddr, filesz, _)| strtab >= *vaddr && strtab < vaddr + filesz)
        .map(|(vaddr, _, offset)| strtab - vaddr + offset)
        .ok_or_else(|| bad("string table outside every loaded segment"))?;
    let mut out = Vec::new();
    for (tag, val) in wanted {
        let offset = strtab_off + val;
        f.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        f.by_ref().take(MAX_STRING as u64).read_to_end(&mut bytes)?;
        let end = bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| bad("unterminated RPATH string"))?;
        bytes.truncate(end);
        out.push(RpathString {
            tag,
            offset,
            value: bytes,
        });
    }
    Ok(Some(out))
}

/// The bytes to write at `old.offset` to replace it with `new`: `new` then NULs up to the old
/// length. Errors when `new` is longer than the old string.
pub fn in_place(old: &RpathString, new: &[u8]) -> Result<Vec<u8>, String> {
    if new.len() > old.value.len() {
        return Err(format!(
            "the relocated RPATH ({} bytes) is longer than the original ({} bytes), so it cannot be rewritten in place; \
             build with a padded install tree (padded_length: 128)",
            new.len(),
            old.value.len()
        ));
    }
    let mut bytes = new.to_vec();
    bytes.resize(old.value.len(), 0);
    Ok(bytes)
}
