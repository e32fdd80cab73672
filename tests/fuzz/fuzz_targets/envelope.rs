//! The CloudEvents envelope read from NATS headers: any header names and values, in any
//! number, must give an envelope or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut headers = async_nats::HeaderMap::new();
    // One header per line, `name: value`, so the fuzzer can build whole envelopes.
    for line in text.lines() {
        // Only what NATS can deliver: a value with a line break cannot arrive in a header.
        if let Some((name, value)) = line.split_once(':')
            && let Ok(name) = name.trim().parse::<async_nats::HeaderName>()
            && let Ok(value) = value.trim().parse::<async_nats::HeaderValue>()
        {
            headers.insert(name, value);
        }
    }
    if let Ok(envelope) = govbus_bus::Envelope::from_headers(Some(&headers)) {
        // A decoded envelope must encode again.
        let mut written = async_nats::HeaderMap::new();
        envelope.write_headers(&mut written);
    }
    let _ = govbus_bus::Envelope::from_headers(None);
});
