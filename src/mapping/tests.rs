//! Mapping CSVs, the email property, E.164.

use super::*;
use chrono::TimeZone;

const GB: country::Id = country::Id::GB;

fn at(h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, h, 0, 0).unwrap()
}

fn table(csv: &str) -> Result<MappingTable, MappingError> {
    MappingTable::parse(
        csv.as_bytes(),
        Path::new("map.csv"),
        GB,
        &["contoso.com".to_string()],
    )
}

fn phone(number: &str, archived: bool) -> Participant {
    Participant {
        phone: normalize_phone(number, GB),
        archived,
        ..Default::default()
    }
}

#[test]
fn e164_normalization() {
    assert_eq!(
        normalize_phone("07700 900123", GB).as_deref(),
        Some("+447700900123")
    );
    assert_eq!(
        normalize_phone("+44 (0)7700-900123", GB).as_deref(),
        Some("+447700900123")
    );
    assert_eq!(
        normalize_phone("0044 7700 900123", GB).as_deref(),
        Some("+447700900123")
    );
    assert_eq!(
        normalize_phone("(202) 555-0143", country::Id::US).as_deref(),
        Some("+12025550143")
    );
    assert_eq!(normalize_phone("+44 7700", GB), None);
    assert_eq!(normalize_phone("HSBC", GB), None);
    assert_eq!(normalize_phone("", GB), None);
}

#[test]
fn csv_wins_over_email_property() {
    let t = table("identifier,mailbox\n+447700900105,emma.clark@contoso.com\n").unwrap();
    let mapper = Mapper::new(Some(t), true, vec!["contoso.com".into()]);
    let mut p = phone("07700900105", true);
    p.email = Some("Emma.Old@contoso.com".into());
    assert_eq!(
        mapper.resolve(&p, at(9)),
        Resolution::Mailbox {
            address: "emma.clark@contoso.com".into(),
            via: Via::Csv { line: 2 }
        }
    );
    assert_eq!(
        mapper.explain(Via::Csv { line: 2 }),
        "mapping CSV map.csv line 2"
    );
    // Not in the CSV: the email property, lowercased.
    let mut q = phone("07700900104", true);
    q.email = Some("Priya.Patel@Contoso.com".into());
    assert_eq!(
        mapper.resolve(&q, at(9)),
        Resolution::Mailbox {
            address: "priya.patel@contoso.com".into(),
            via: Via::EmailProperty
        }
    );
    // With the email property disabled, the same participant is unmapped.
    let csv_only = Mapper::new(None, false, vec!["contoso.com".into()]);
    assert_eq!(csv_only.resolve(&q, at(9)), Resolution::Unmapped);
}

#[test]
fn partner_address_rows_and_external_parties() {
    let t = table("identifier,mailbox\nAlice@SL2.Example,alice@contoso.com\n").unwrap();
    let mapper = Mapper::new(Some(t), true, vec!["contoso.com".into()]);
    let p = Participant {
        address: Some("alice@sl2.example".into()),
        archived: true,
        ..Default::default()
    };
    assert!(matches!(
        mapper.resolve(&p, at(1)),
        Resolution::Mailbox {
            via: Via::Csv { .. },
            ..
        }
    ));
    let outsider = Participant {
        email: Some("j.doe@example.com".into()),
        ..phone("07700900556", false)
    };
    assert_eq!(mapper.resolve(&outsider, at(1)), Resolution::External);
    let unmapped_employee = phone("07700900199", true);
    assert_eq!(
        mapper.resolve(&unmapped_employee, at(1)),
        Resolution::Unmapped
    );
}

#[test]
fn validity_dates_follow_a_reassigned_number() {
    let t = table(
        "identifier,mailbox,valid_from,valid_to\n\
         07700 900103,carol.white@contoso.com,,2026-11-20T12:00:00Z\n\
         +447700900103,dan.brown@contoso.com,2026-11-20T12:00:00Z,\n\
         07700900107,erin@contoso.com,2026-11-19,2026-11-19\n",
    )
    .unwrap();
    assert_eq!(
        t.lookup("+447700900103", at(11)),
        Some("carol.white@contoso.com")
    );
    assert_eq!(
        t.lookup("+447700900103", at(12)),
        Some("dan.brown@contoso.com")
    );
    // A date as valid_to covers the whole day, and nothing after it.
    let late_19th = Utc.with_ymd_and_hms(2026, 11, 19, 23, 59, 59).unwrap();
    assert_eq!(
        t.lookup("+447700900107", late_19th),
        Some("erin@contoso.com")
    );
    assert_eq!(t.lookup("+447700900107", at(0)), None);
}

#[test]
fn malformed_rows_name_the_line() {
    let e =
        table("identifier,mailbox\n+447700900101,alice@contoso.com\n+44 7700,bob@contoso.com\n")
            .unwrap_err();
    assert_eq!(e.line, Some(3));
    assert!(
        e.to_string()
            .starts_with("mapping file map.csv line 3: '+44 7700' is not a valid phone number"),
        "{e}"
    );

    let e = table("identifier,mailbox\n07700900101,not-an-address\n").unwrap_err();
    assert_eq!(e.line, Some(2));

    let e = table("identifier,mailbox\n07700900101,someone@gmail.com\n").unwrap_err();
    assert!(
        e.message.contains("outside the organisation's domains"),
        "{e}"
    );

    let e = table("phone,address\n").unwrap_err();
    assert_eq!(e.line, Some(1));

    let e =
        table("identifier,mailbox,valid_from\n07700900101,a@contoso.com,yesterday\n").unwrap_err();
    assert!(e.message.starts_with("valid_from:"), "{e}");

    let e = table(
        "identifier,mailbox,valid_from,valid_to\n\
         07700900101,a@contoso.com,2026-11-01,\n\
         +447700900101,b@contoso.com,2026-11-10,2026-11-30\n",
    )
    .unwrap_err();
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("line 2"), "{e}");

    let e = table("identifier,mailbox\n07700900101,a@contoso.com,extra\n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
}

#[test]
fn comments_and_blank_lines_are_ignored() {
    let t =
        table("# exported from HR 2026-11-01\nidentifier,mailbox\n\n07700900101,a@contoso.com\n")
            .unwrap();
    assert_eq!(t.len(), 1);
}

#[test]
fn the_csv_may_name_the_employee_for_each_period() {
    let t = table(
        "identifier,mailbox,valid_from,valid_to,display_name\n\
         +447700900103,carol.white@contoso.com,,2026-11-20T12:00:00Z,Carol White (Sales)\n\
         +447700900103,dan.brown@contoso.com,2026-11-20T12:00:00Z,,\n",
    )
    .unwrap();
    let mapper = Mapper::new(Some(t), false, vec!["contoso.com".into()]);
    let line = phone("07700900103", true);
    assert_eq!(
        mapper.display_name(&line, at(9)).as_deref(),
        Some("Carol White (Sales)")
    );
    assert_eq!(
        mapper.display_name(&line, at(13)),
        None,
        "no name for Dan's row"
    );
    assert_eq!(
        mapper.display_name(&phone("07700900199", true), at(9)),
        None
    );
}
