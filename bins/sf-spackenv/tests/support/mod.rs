#![allow(dead_code)] // each test binary uses a different part of the shared support
pub mod snapshots;
