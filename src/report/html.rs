//! The days on one page: a self-contained HTML file (no script, no external resource) with,
//! per connector, a chart of the days (imported, partially imported, held, failed, and the
//! days left open), then the open days, the failures and held copies with their reasons,
//! and the unmapped users.
//! It holds personal data (numbers, addresses, item ids): `report --format html` writes it
//! for the admin who asked, and the endpoint serves it only on loopback or with a token.

use super::StatusLog;
use chrono::NaiveDate;
use std::fmt::Write as _;

/// One connector's days: each day's reconciliation, or why there is none.
pub struct ConnectorDays {
    pub connector: String,
    pub days: Vec<(NaiveDate, Result<Option<StatusLog>, String>)>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page for `connectors` over the days from `from` to `to`.
pub fn page(connectors: &[ConnectorDays], from: NaiveDate, to: NaiveDate) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>comms-archiver {from} to {to}</title><style>\
         body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}\
         h2{{margin-top:2em}} table{{border-collapse:collapse;margin:.5em 0}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
         .open{{color:#b00;font-weight:bold}} .legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}}\
         </style></head><body><h1>comms-archiver: {from} to {to}</h1>\
         <p class=\"legend\"><span style=\"background:#2a7\"></span>imported\
         <span style=\"background:#7bd\"></span>partially imported\
         <span style=\"background:#a6c\"></span>held\
         <span style=\"background:#d55\"></span>failed\
         <span style=\"background:#fc4\"></span>day open</p>"
    );
    for c in connectors {
        let _ = write!(out, "<h2>{}</h2>", escape(&c.connector));
        out.push_str(&chart(&c.days));
        let open: Vec<String> = c
            .days
            .iter()
            .filter_map(|(day, log)| match log {
                Ok(Some(l)) if !l.complete => Some(format!(
                    "<li class=\"open\">{day}: {}</li>",
                    escape(
                        &l.errors
                            .iter()
                            .map(|e| format!("{}: {}", e.reason, e.detail))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                )),
                Err(e) => Some(format!(
                    "<li class=\"open\">{day}: the record does not add up: {}</li>",
                    escape(e)
                )),
                _ => None,
            })
            .collect();
        if !open.is_empty() {
            let _ = write!(out, "<h3>Open days</h3><ul>{}</ul>", open.join(""));
        }
        let mut failures = String::new();
        let mut held = String::new();
        let mut unmapped = Vec::new();
        for (day, log) in &c.days {
            let Ok(Some(l)) = log else { continue };
            for h in &l.held_copies {
                let _ = write!(
                    held,
                    "<tr><td>{day}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(h.reason.as_str()),
                    escape(&h.item_id),
                    escape(&h.source_user),
                    escape(h.mailbox.as_deref().unwrap_or("-")),
                    escape(&match &h.filed_in {
                        Some(c) => format!("{}; filed in {c} meanwhile", h.detail),
                        None => h.detail.clone(),
                    })
                );
            }
            for f in &l.failures {
                let _ = write!(
                    failures,
                    "<tr><td>{day}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(f.reason.as_str()),
                    escape(&f.item_id),
                    escape(&f.source_user),
                    escape(f.mailbox.as_deref().unwrap_or("-")),
                    escape(&f.detail)
                );
            }
            unmapped.extend(
                l.unmapped_users
                    .iter()
                    .map(|u| format!("{day}: {} ({} held)", escape(u), l.held_for(u))),
            );
        }
        if !failures.is_empty() {
            let _ = write!(
                out,
                "<h3>Failures</h3><table><tr><th>day</th><th>reason</th><th>item</th>\
                 <th>user</th><th>mailbox</th><th>detail</th></tr>{failures}</table>"
            );
        }
        if !held.is_empty() {
            let _ = write!(
                out,
                "<h3>Held copies</h3><p>Delivered by the next wake, or by <code>redrive</code>, \
                 once the cause is fixed.</p><table><tr><th>day</th><th>reason</th><th>item</th>\
                 <th>user</th><th>mailbox</th><th>detail</th></tr>{held}</table>"
            );
        }
        if !unmapped.is_empty() {
            let _ = write!(
                out,
                "<h3>Unmapped users</h3><ul><li>{}</li></ul>",
                unmapped.join("</li><li>")
            );
        }
    }
    out.push_str("</body></html>\n");
    out
}

/// Stacked bars, one per day, as inline SVG.
fn chart(days: &[(NaiveDate, Result<Option<StatusLog>, String>)]) -> String {
    let counts: Vec<(NaiveDate, [u64; 4], bool)> = days
        .iter()
        .map(|(day, log)| match log {
            Ok(Some(l)) => (
                *day,
                [l.imported, l.partially_imported, l.held, l.failed],
                !l.complete,
            ),
            Ok(None) => (*day, [0; 4], false),
            Err(_) => (*day, [0; 4], true),
        })
        .collect();
    let most = counts
        .iter()
        .map(|(_, c, _)| c.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (bar, gap, height) = (28u64, 10u64, 160u64);
    let width = (bar + gap) * counts.len() as u64 + gap;
    let mut svg = format!(
        "<svg width=\"{width}\" height=\"{}\" role=\"img\">",
        height + 40
    );
    for (i, (day, c, open)) in counts.iter().enumerate() {
        let x = gap + i as u64 * (bar + gap);
        let mut y = height;
        if *open {
            let _ = write!(
                svg,
                "<rect x=\"{x}\" y=\"0\" width=\"{bar}\" height=\"{height}\" fill=\"#fc4\" opacity=\"0.5\"/>"
            );
        }
        for (n, colour) in c.iter().zip(["#2a7", "#7bd", "#a6c", "#d55"]) {
            let h = n * height / most;
            y -= h;
            if h > 0 {
                let _ = write!(
                    svg,
                    "<rect x=\"{x}\" y=\"{y}\" width=\"{bar}\" height=\"{h}\" fill=\"{colour}\"><title>{day}: {n}</title></rect>"
                );
            }
        }
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>\
             <text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            x + bar / 2,
            height + 14,
            day.format("%m-%d"),
            x + bar / 2,
            height + 28,
            c[0] + c[1]
        );
    }
    svg.push_str("</svg>");
    svg
}
