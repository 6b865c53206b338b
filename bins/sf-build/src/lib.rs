//! `sf-build`: the containerised build, the relocatable tarball, its test, and the Slurm image.

use std::process::ExitCode;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
