//! StreamHeader::decode on arbitrary bytes (what a peer, or anyone who completed a
//! handshake, can put at the start of a stream):
//! - it never panics, whatever the bytes;
//! - a Complete(header, len) has len <= input length, and len is 14 or 38;
//! - encoding the decoded header gives back exactly the first `len` input bytes;
//! - every strict prefix of those `len` bytes decodes as Incomplete (a reader that waits
//!   for more bytes never rejects a header that is still arriving);
//! - an Incomplete input is shorter than the longest header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qmesh_native::header::{Decoded, StreamHeader, MAX_LEN};

fuzz_target!(|data: &[u8]| {
    match StreamHeader::decode(data) {
        Ok(Decoded::Complete(h, len)) => {
            assert!(len <= data.len(), "Complete length {len} > input length {}", data.len());
            assert!(len == 14 || len == 38, "Complete length {len} is neither 14 nor 38");
            let again = h.encode().expect("a decoded header must encode");
            assert_eq!(again.as_slice(), &data[..len], "re-encoding {h:?} does not give back the input prefix");
            for i in 0..len {
                assert_eq!(StreamHeader::decode(&data[..i]), Ok(Decoded::Incomplete), "prefix of {i} bytes of a valid header");
            }
        }
        Ok(Decoded::Incomplete) => {
            assert!(data.len() < MAX_LEN, "Incomplete with {} bytes (the longest header is {MAX_LEN})", data.len());
        }
        Err(e) => assert!(!e.is_empty()),
    }
});
