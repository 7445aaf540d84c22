//! The mapping CSV reader: any bytes give a table or an error naming the file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("mapping.csv");
    if let Err(e) = comms_archiver::mapping::MappingTable::parse(
        data,
        path,
        phonenumber::country::Id::GB,
        &["contoso.com".into()],
    ) {
        assert!(e.to_string().starts_with("mapping file mapping.csv"));
    }
});
