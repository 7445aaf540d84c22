//! Answers spoiled on their way back ([`super::FakeGraph::spoil`]): the request takes effect,
//! then its success answer is replaced, as by a gateway answering in Graph's place.

use comms_archiver::http_server::Response;
use serde_json::json;
use std::sync::Mutex;

/// The requests whose answers [`super::FakeGraph::spoil`] can spoil.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A draft made from MIME.
    Draft,
    /// A message made in a folder.
    Message,
    /// A draft's attachments listed.
    Attachments,
    /// A folder searched for an item key.
    Search,
    /// The Inbox's child folders looked up.
    Folders,
    /// A message given its item key once whole.
    ItemKey,
}

/// How an answer is spoiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spoiled {
    /// A 200 with an HTML page.
    Html,
    /// `{}`: JSON, but none of what Graph sends.
    Empty,
    /// The first half of the JSON.
    Cut,
}

/// The answer, or what `spoil` makes of it (its first entry for the answer's route, taken).
pub(super) fn spoiled(
    spoil: &Mutex<Vec<(Route, Spoiled)>>,
    method: &str,
    rest: &[String],
    response: Response,
) -> Response {
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let route = match (method, rest.as_slice()) {
        ("POST", ["messages"]) => Route::Draft,
        ("POST", ["mailFolders", _, "messages"]) => Route::Message,
        ("GET", ["messages", _, "attachments"]) => Route::Attachments,
        ("GET", ["mailFolders", "inbox", "childFolders"]) => Route::Folders,
        // A search of the Drafts (for a draft whose answer was lost) is not a copy's search.
        ("GET", ["mailFolders", "drafts", "messages"]) => return response,
        ("GET", ["mailFolders", _, "messages"]) => Route::Search,
        ("PATCH", ["messages", _]) => Route::ItemKey,
        _ => return response,
    };
    if !(200..300).contains(&response.status) {
        return response;
    }
    let mut spoil = spoil.lock().unwrap();
    let Some(at) = spoil.iter().position(|(r, _)| *r == route) else {
        return response;
    };
    match spoil.remove(at).1 {
        Spoiled::Html => Response::new(
            200,
            "text/html",
            "<html><body>Gateway sign-in</body></html>",
        ),
        Spoiled::Empty => Response::json(200, &json!({})),
        Spoiled::Cut => {
            let half = response.body[..response.body.len() / 2].to_vec();
            Response::new(response.status, response.content_type, half)
        }
    }
}
