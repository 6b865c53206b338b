//! The model every Slurm Factory step speaks.
//!
//! Each `sf-*` binary is a thin CLI over its own library; what they share lives here: the support
//! matrix ([`matrix`]), the storage layout that formats every key and URL ([`layout`]), the result
//! record each step leaves behind ([`record`]), the build container's paths ([`container`]), GitHub Actions I/O ([`gha`]), the documented
//! environment variables ([`env`]) and the exit-code discipline ([`exit`]).

pub mod changes;
pub mod cli;
pub mod container;
pub mod datafile;
pub mod env;
pub mod exit;
pub mod fsutil;
pub mod gha;
pub mod layout;
pub mod matrix;
pub mod record;

pub use exit::{bad_input, BadInput};
