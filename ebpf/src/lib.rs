//! Small helpers shared by the dcmesh eBPF programs: bounds-checked packet access,
//! header layouts and checksum arithmetic. No policy lives here.
#![no_std]

pub mod csum;
pub mod hdr;
