//! `KkNumber::parse` on any text: a KK number or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(kk) = govbus_civil::KkNumber::parse(&text) {
        assert_eq!(kk.as_str(), text.trim());
        let _ = format!("{kk:?}");
    }
});
