//! The block every rendered message opens its body with, for a reviewer reading it at a
//! glance: the conversation, each participant with number and address, the archived
//! employee's line, the partner, the kind and the direction. The same facts are in the
//! `X-Comms-Archiver-*` headers, for search.

use super::{header_text, pretty_phone, Person, RenderContext};
use crate::item::{Content, Item, Role};
use std::fmt::Write as _;

/// The opening block, ending with a rule and a blank line before the content.
pub(super) fn block(item: &Item, people: &[Person], ctx: &RenderContext<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Conversation:  {}", conversation(item));
    out.push_str("Participants:\n");
    for (p, person) in item.participants.iter().zip(people) {
        let role = match p.role {
            Some(Role::From) => "From",
            Some(Role::To) => "To",
            Some(Role::Cc) => "Cc",
            None => "-",
        };
        let number = p
            .phone
            .as_deref()
            .map(pretty_phone)
            .or_else(|| p.address.as_deref().map(header_text))
            .unwrap_or_else(|| "(no number)".to_string());
        let name = match person.label() {
            label if label == number || label == person.address => String::new(),
            label => format!("{label}, "),
        };
        let archived = if p.archived { "  (archived line)" } else { "" };
        let _ = writeln!(
            out,
            "  {role:<4}  {name}{number} <{}>{archived}",
            person.address
        );
    }
    let line = item
        .participants
        .iter()
        .find(|p| p.archived)
        .and_then(|p| {
            p.phone
                .as_deref()
                .map(pretty_phone)
                .or_else(|| p.address.as_deref().map(header_text))
        })
        .unwrap_or_else(|| "not named by the partner".to_string());
    let _ = writeln!(out, "Archived line: {line}");
    let _ = writeln!(out, "Partner:       {}", ctx.partner);
    let kind = match &item.content {
        Content::CellTrust(c) => format!(
            "{} ({})",
            item.content.kind(),
            header_text(&c.channel.to_ascii_lowercase())
        ),
        other => other.kind().to_string(),
    };
    let _ = writeln!(out, "Kind:          {kind}");
    let _ = writeln!(out, "Direction:     {}", item.direction.as_str());
    out.push_str("----\n\n");
    out
}

/// 1:1, or the group with its name and how many take part; with the partner's thread.
fn conversation(item: &Item) -> String {
    let group = match &item.content {
        Content::WhatsApp(m) => m.group.as_ref(),
        _ => None,
    };
    let members = item.participants.len();
    let thread = item
        .conversation
        .as_ref()
        .map(|c| format!(", thread {}", header_text(&c.id)))
        .unwrap_or_default();
    match group {
        Some(g) => format!(
            "group \"{}\" ({}), {members} members{thread}",
            header_text(g.name.as_deref().unwrap_or(&g.id)),
            header_text(&g.id)
        ),
        None if members > 2 => format!("group of {members}{thread}"),
        None => format!("1:1{thread}"),
    }
}
