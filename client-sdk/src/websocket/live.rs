//! Register documents over WebSocket: the relay's live channel
//! (`/api/v1/docs/{name}/live`, JSON text frames), used when the SDK has fallen back from
//! Quantum. It carries the same messages as the Quantum envelopes; this module translates
//! them, so [`RegisterLink`] users cannot tell the two apart:
//!
//! - a command becomes a request (`{"op":"write",...}` or `{"op":"resolve",...}`);
//! - `{"type":"result","outcome":{..}}` becomes the event `result` with the outcome;
//! - `{"type":"error","error":{"code":"locked",..}}` becomes an error with the Quantum code
//!   (see [`error_code`]);
//! - every other frame becomes the event named by its `type`, with the frame as its data.

use aetherflow_crdt::code::Code;
use aetherflow_crdt::register::Command;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;
use tracing::debug;

use super::{Socket, WebSocketTransport};
use crate::error::TransportError;
use crate::transport::{RegisterLink, RegisterMessage, TransportKind};

/// Messages buffered per direction.
const LINK_BUFFER: usize = 256;

/// Opens the live channel at `url` (token included); open once the `state` frame arrived.
pub(crate) async fn connect(
    transport: &WebSocketTransport,
    url: String,
) -> Result<RegisterLink, TransportError> {
    let mut socket = transport.open(&url).await?;
    let state = loop {
        match socket.next().await {
            Some(Ok(Frame::Text(text))) => match translate(text.as_str()) {
                Some(state @ RegisterMessage::Event { .. }) => break state,
                _ => return Err(TransportError::Connect("no state from the relay".into())),
            },
            Some(Ok(Frame::Close(close))) => {
                let reason = close.map(|c| c.reason.to_string()).unwrap_or_default();
                return Err(TransportError::Connect(format!("closed: {reason}")));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(TransportError::Connect(e.to_string())),
            None => return Err(TransportError::Connect("connection lost".into())),
        }
    };
    let (outgoing, from_register) = mpsc::channel(LINK_BUFFER);
    let (to_register, incoming) = mpsc::channel(LINK_BUFFER);
    let _ = to_register.send(state).await;
    tokio::spawn(pump(socket, from_register, to_register));
    Ok(RegisterLink {
        kind: TransportKind::WebSocket,
        outgoing,
        incoming,
    })
}

/// Moves requests and frames until either side ends.
async fn pump(
    socket: Socket,
    mut from_register: mpsc::Receiver<Command>,
    to_register: mpsc::Sender<RegisterMessage>,
) {
    let (mut sink, mut stream) = socket.split();
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            outgoing = from_register.recv() => {
                let Some(command) = outgoing else { break };
                next_id += 1;
                let frame = Frame::Text(request(&command, next_id).to_string().into());
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
            incoming = stream.next() => {
                let message = match incoming {
                    Some(Ok(Frame::Text(text))) => match translate(text.as_str()) {
                        Some(message) => message,
                        None => {
                            debug!("unreadable live frame from the relay; closing");
                            break;
                        }
                    },
                    Some(Ok(Frame::Close(Some(close)))) if u16::from(close.code) == Code::DocumentDeleted.as_u16() => {
                        let code = Code::DocumentDeleted.as_u32();
                        RegisterMessage::Error { code, reason: close.reason.to_string() }
                    }
                    Some(Ok(Frame::Close(_))) | Some(Err(_)) | None => break,
                    // Pings are answered by tungstenite itself.
                    Some(Ok(_)) => continue,
                };
                let deleted = matches!(message, RegisterMessage::Error { code, .. } if code == Code::DocumentDeleted.as_u32());
                if to_register.send(message).await.is_err() || deleted {
                    break;
                }
            }
        }
    }
    let _ = sink.close().await;
}

/// The live request for `command`. An empty author is left out, so the relay uses the
/// token's subject.
fn request(command: &Command, id: u64) -> Value {
    let author = |a: &str| (!a.is_empty()).then(|| a.to_owned());
    match command {
        Command::LwwWrite(write) => {
            json!({ "op": "write", "id": id, "value": write.value, "stamp": write.stamp })
        }
        Command::ManualWrite(write) => json!({
            "op": "write",
            "id": id,
            "value": write.value,
            "base_version": write.base_version,
            "author": author(&write.author),
        }),
        Command::Resolve {
            conflict,
            value,
            author: by,
            ..
        } => json!({
            "op": "resolve",
            "id": id,
            "conflict": conflict,
            "value": value,
            "author": author(by),
        }),
    }
}

/// One frame from the relay as a [`RegisterMessage`]; `None` if it is not a typed JSON object.
fn translate(text: &str) -> Option<RegisterMessage> {
    let mut frame: Value = serde_json::from_str(text).ok()?;
    let name = frame.get("type")?.as_str()?.to_owned();
    Some(match name.as_str() {
        "result" => RegisterMessage::Event {
            name,
            data: frame
                .get_mut("outcome")
                .map(Value::take)
                .unwrap_or_default(),
        },
        "error" => RegisterMessage::Error {
            code: error_code(frame["error"]["code"].as_str().unwrap_or_default()),
            reason: frame["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        },
        _ => RegisterMessage::Event { name, data: frame },
    })
}

/// The Quantum error code for the live channel's text code.
pub(crate) fn error_code(code: &str) -> u32 {
    let code = match code {
        "read_only" | "forbidden" => Code::Forbidden,
        "locked" => Code::Locked,
        "not_found" => Code::NotFound,
        "conflict" => Code::WrongKind,
        "internal" => Code::InternalError,
        "stamp_too_far_ahead" => Code::ClockAhead,
        "token_missing"
        | "token_malformed"
        | "token_expired"
        | "token_not_yet_valid"
        | "token_bad_signature" => Code::Unauthorized,
        _ => Code::BadRequest,
    };
    code.as_u32()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aetherflow_crdt::register::clock::HlcStamp;
    use aetherflow_crdt::register::lww::LwwWrite;
    use aetherflow_crdt::register::manual::ManualWrite;

    #[test]
    fn commands_become_the_live_requests_the_relay_reads() {
        let lww = Command::LwwWrite(LwwWrite::new(json!("t"), HlcStamp::default(), "w"));
        let request = request(&lww, 1);
        assert_eq!(request["op"], "write");
        assert_eq!(request["stamp"]["writer"], "w");
        let manual = Command::ManualWrite(ManualWrite {
            base_version: 4,
            value: json!(1),
            author: String::new(),
            at_ms: 9,
        });
        let request = super::request(&manual, 2);
        assert_eq!(request["base_version"], 4);
        assert_eq!(request["author"], Value::Null);
        let resolve = Command::Resolve {
            conflict: 3,
            value: json!(2),
            author: "ann".into(),
            at_ms: 0,
        };
        assert_eq!(super::request(&resolve, 3)["conflict"], 3);
    }

    #[test]
    fn frames_become_the_same_messages_as_quantum_envelopes() {
        let result = translate(r#"{"type":"result","id":1,"outcome":{"outcome":"applied"}}"#);
        assert_eq!(
            result,
            Some(RegisterMessage::Event {
                name: "result".into(),
                data: json!({ "outcome": "applied" })
            })
        );
        let error =
            translate(r#"{"type":"error","id":2,"error":{"code":"locked","message":"held"}}"#);
        assert_eq!(
            error,
            Some(RegisterMessage::Error {
                code: 4423,
                reason: "held".into()
            })
        );
        let ahead = translate(
            r#"{"type":"error","id":3,"error":{"code":"stamp_too_far_ahead","message":"m"}}"#,
        );
        assert!(matches!(
            ahead,
            Some(RegisterMessage::Error { code: 4422, .. })
        ));
        for code in [
            "token_expired",
            "token_not_yet_valid",
            "token_bad_signature",
        ] {
            assert_eq!(error_code(code), 4401, "{code}");
        }
        assert!(matches!(
            crate::RegisterError::from_code(4422, "m".into()),
            crate::RegisterError::ClockAhead { .. }
        ));
        let event = translate(r#"{"type":"lock_released","holder":"ann"}"#).unwrap();
        assert!(matches!(event, RegisterMessage::Event { name, .. } if name == "lock_released"));
        assert_eq!(translate("not json"), None);
        assert_eq!(translate(r#"{"no":"type"}"#), None);
    }
}
