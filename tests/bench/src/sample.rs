//! The event both paths carry: an opaque payload of a chosen size.

use bytes::Bytes;

/// A reading of some sample: only its size matters here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SampleRecorded {
    /// The payload.
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
}

impl prost::Name for SampleRecorded {
    const PACKAGE: &'static str = "govbus.bench.v1";
    const NAME: &'static str = "SampleRecorded";
}

impl govbus_bus::Event for SampleRecorded {
    const TYPE: &'static str = "bench.sample.recorded.v1";
}

/// The service that publishes samples.
pub const SERVICE: &str = "bench";

/// A sample whose encoded message is `size` bytes (the raw baseline sends `size` bytes too).
pub fn sample(size: usize) -> SampleRecorded {
    // Field tag (1 byte) and length prefix (1–2 bytes) are part of the size.
    let overhead = if size > 129 { 3 } else { 2 };
    SampleRecorded {
        data: Bytes::from(vec![0x5a; size.saturating_sub(overhead)]),
    }
}

/// `size` bytes, for the raw baseline.
pub fn raw_payload(size: usize) -> Bytes {
    Bytes::from(vec![0x5a; size])
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn a_sample_encodes_to_the_asked_size() {
        for size in [64, 128, 256, 1024] {
            assert_eq!(sample(size).encoded_len(), size);
        }
    }
}
