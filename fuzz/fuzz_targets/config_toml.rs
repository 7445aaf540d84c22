//! The configuration: any text gives a configuration or an error naming the file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) =
        comms_archiver::config::Config::from_toml(std::path::Path::new("c.toml"), &text, &[])
    {
        assert!(e.to_string().starts_with("c.toml"));
    }
});
