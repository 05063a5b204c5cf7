//! Feeds arbitrary bytes to every decoder a datagram or file reaches: none may panic.
#![no_main]
use dcmesh_control::{cert::Certificate, wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(wire::Message::Advert(a)) = wire::decode(data) {
        let _ = Certificate::decode(&a.body.cert);
        let _ = a.signature();
    }
    let _ = Certificate::decode(data);
});
