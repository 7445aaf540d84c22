//! TeleMessage archivers: O2 Network (SMS, MMS, voice) and WhatsApp (chats, calls, files).
//! Both use TeleMessage's conventions: the archived employee is named by number, times are
//! UTC, and ids are stable across re-deliveries. Contract: `docs/partners/telemessage.md`.

pub mod o2;
pub mod whatsapp;

pub use o2::O2Format;
pub use whatsapp::WhatsAppFormat;

use crate::item::Participant;

/// Marks the participants whose phone is the archived number; Err when none is.
pub(crate) fn archived_by(
    participants: &mut [Participant],
    number: &str,
    field: &str,
) -> Result<(), String> {
    let mut found = false;
    for p in participants.iter_mut() {
        if p.phone.as_deref() == Some(number) {
            p.archived = true;
            found = true;
        }
    }
    if found {
        Ok(())
    } else {
        Err(format!(
            "{field} {number} is neither the sender nor a recipient"
        ))
    }
}
