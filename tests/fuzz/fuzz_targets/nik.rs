//! `Nik::parse` on any text: a NIK or an error, never a panic, and an accepted NIK reads back
//! the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(nik) = govbus_civil::Nik::parse(&text) {
        assert_eq!(nik.as_str(), text.trim());
        let _ = format!("{nik:?}");
    }
});
