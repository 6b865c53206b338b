//! The relocatable Slurm tarball (SPEC section 7): a deterministic tar of a view and its
//! companions ([`pack`]), gzipped in parallel with its sha256 taken in the same pass ([`pargz`]),
//! with ELF RPATHs rewritten to `$ORIGIN`-relative paths in place ([`elf`], [`relocate`]), the
//! build facts in `BUILDINFO.json` ([`buildinfo`]), extraction that refuses anything that
//! could land outside its destination ([`extract`]), and the one-pass check of a tarball before
//! it is published ([`inspect`]).

pub mod buildinfo;
pub mod elf;
pub mod extract;
pub mod inspect;
pub mod pack;
pub mod pargz;
pub mod relocate;

pub use buildinfo::{BuildInfo, BuiltOn, Relocation};
pub use extract::{extract, ExtractReport};
pub use inspect::{inspect, Inspection};
pub use pack::{pack, ExtraFile, PackInput, PackReport};
pub use pargz::{GzOptions, GzSummary, ParGzWriter};
