//! A realtime session's conversation: its items (messages, function calls and their
//! outputs) in order, as events show them and as the chat model reads them. Pure.
//!
//! The model reads text: a spoken user item is its transcript, a spoken answer the part
//! of its transcript that was heard (a barge-in truncates it). The oldest items are left
//! out of a model call once the conversation passes [`MAX_CONTEXT_CHARS`] (OpenAI's
//! `truncation: "auto"`), and a conversation keeps at most [`MAX_ITEMS`].

use serde_json::{Value, json};

use super::config::{clip, invalid};
use crate::error::{ApiError, ApiResult};

/// Items a conversation keeps; the oldest go first.
pub const MAX_ITEMS: usize = 1_024;
/// Characters of conversation a model call carries at most (the newest).
pub const MAX_CONTEXT_CHARS: usize = 96 * 1024;
/// Characters one item may hold.
pub const MAX_ITEM_CHARS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    System,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// `audio`: spoken (shown as audio content with its transcript).
    Message {
        role: Role,
        text: String,
        audio: bool,
    },
    FunctionCall {
        call_id: String,
        name: String,
        arguments: String,
    },
    FunctionCallOutput {
        call_id: String,
        output: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: String,
    pub body: Body,
    /// `false`: cut short (a cancelled or interrupted answer).
    pub complete: bool,
}

pub fn new_id() -> String {
    format!("item_{}", uuid::Uuid::now_v7().simple())
}

impl Item {
    pub fn message(id: String, role: Role, text: String, audio: bool) -> Item {
        Item {
            id,
            body: Body::Message { role, text, audio },
            complete: true,
        }
    }

    /// A client's `conversation.item.create` item.
    pub fn from_client(item: &Value) -> ApiResult<Item> {
        let id = match item["id"].as_str() {
            Some(id) if id.is_empty() || id.len() > 128 => {
                return Err(invalid(
                    "item.id",
                    "an item id is 1 to 128 characters".into(),
                ));
            }
            Some(id) => id.to_owned(),
            None => new_id(),
        };
        let text = |field: &str| -> ApiResult<String> {
            let value = item[field].as_str().ok_or_else(|| {
                invalid(&format!("item.{field}"), format!("`{field}` is missing"))
            })?;
            within(value, &format!("item.{field}"))
        };
        let body = match item["type"].as_str().unwrap_or("message") {
            "message" => message(item)?,
            "function_call" => Body::FunctionCall {
                call_id: text("call_id")?,
                name: text("name")?,
                arguments: text("arguments").unwrap_or_else(|_| "{}".to_owned()),
            },
            "function_call_output" => Body::FunctionCallOutput {
                call_id: text("call_id")?,
                output: text("output")?,
            },
            other => {
                return Err(invalid(
                    "item.type",
                    format!(
                        "`{}` is not message, function_call or function_call_output",
                        clip(other)
                    ),
                ));
            }
        };
        Ok(Item {
            id,
            body,
            complete: true,
        })
    }

    /// The item as events show it (`beta`: the beta protocol's content types).
    pub fn describe(&self, beta: bool) -> Value {
        let status = match self.complete {
            true => "completed",
            false => "incomplete",
        };
        match &self.body {
            Body::Message { role, text, audio } => {
                let part = match (role, audio, beta) {
                    (Role::Assistant, true, false) => {
                        json!({"type": "output_audio", "transcript": text})
                    }
                    (Role::Assistant, true, true) => json!({"type": "audio", "transcript": text}),
                    (Role::Assistant, false, false) => json!({"type": "output_text", "text": text}),
                    (Role::Assistant, false, true) => json!({"type": "text", "text": text}),
                    (_, true, _) => json!({"type": "input_audio", "transcript": text}),
                    (_, false, _) => json!({"type": "input_text", "text": text}),
                };
                json!({"id": self.id, "type": "message", "object": "realtime.item",
                    "status": status, "role": role.as_str(), "content": [part]})
            }
            Body::FunctionCall {
                call_id,
                name,
                arguments,
            } => json!({"id": self.id, "type": "function_call", "object": "realtime.item",
                "status": status, "call_id": call_id, "name": name, "arguments": arguments}),
            Body::FunctionCallOutput { call_id, output } => {
                json!({"id": self.id, "type": "function_call_output", "object": "realtime.item",
                "status": status, "call_id": call_id, "output": output})
            }
        }
    }

    fn chars(&self) -> usize {
        match &self.body {
            Body::Message { text, .. } => text.len(),
            Body::FunctionCall {
                name, arguments, ..
            } => name.len() + arguments.len(),
            Body::FunctionCallOutput { output, .. } => output.len(),
        }
    }
}

/// A client's message item: its role and the text of its content parts (an audio part
/// needs its transcript: the audio itself is heard through the input audio buffer).
fn message(item: &Value) -> ApiResult<Body> {
    let role = match item["role"].as_str() {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("system") => Role::System,
        _ => {
            return Err(invalid(
                "item.role",
                "a message's role is user, assistant or system".into(),
            ));
        }
    };
    let Some(parts) = item["content"].as_array().filter(|p| !p.is_empty()) else {
        return Err(invalid(
            "item.content",
            "a message has a list of content parts".into(),
        ));
    };
    let mut texts = Vec::new();
    let mut audio = false;
    for (index, part) in parts.iter().enumerate() {
        let at = format!("item.content[{index}]");
        let text = match part["type"].as_str() {
            Some("input_text" | "text" | "output_text") => part["text"].as_str(),
            Some("input_audio" | "audio" | "output_audio") => {
                audio = true;
                if part["transcript"].is_null() && part["audio"].is_string() {
                    return Err(invalid(
                        &format!("{at}.transcript"),
                        "audio content is heard through input_audio_buffer.append here; \
                         an audio item needs its transcript"
                            .into(),
                    ));
                }
                part["transcript"].as_str()
            }
            _ => {
                return Err(invalid(
                    &format!("{at}.type"),
                    "a content part is input_text, text or input_audio (with a transcript)".into(),
                ));
            }
        };
        let text = text.ok_or_else(|| invalid(&at, "a content part needs its text".into()))?;
        texts.push(text);
    }
    let text = within(&texts.join("\n"), "item.content")?;
    Ok(Body::Message { role, text, audio })
}

fn within(text: &str, param: &str) -> ApiResult<String> {
    match text.len() <= MAX_ITEM_CHARS {
        true => Ok(text.to_owned()),
        false => Err(ApiError::too_large(param, MAX_ITEM_CHARS as u64).with_field("param", param)),
    }
}

#[derive(Debug, Default)]
pub struct Conversation {
    items: Vec<Item>,
}

impl Conversation {
    /// Puts an item after `previous` (`None`: at the end; `"root"`: first). Returns the
    /// id of the item before it.
    pub fn insert(&mut self, item: Item, previous: Option<&str>) -> ApiResult<Option<String>> {
        if self.get(&item.id).is_some() {
            return Err(invalid(
                "item.id",
                format!("item `{}` exists already", clip(&item.id)),
            ));
        }
        let at = match previous {
            None => self.items.len(),
            Some("root") => 0,
            Some(id) => {
                self.position(id).ok_or_else(|| {
                    invalid(
                        "previous_item_id",
                        format!("no item `{}` in the conversation", clip(id)),
                    )
                })? + 1
            }
        };
        let before = at.checked_sub(1).map(|i| self.items[i].id.clone());
        self.items.insert(at, item);
        if self.items.len() > MAX_ITEMS {
            self.items.remove(0);
        }
        Ok(before)
    }

    pub fn last_id(&self) -> Option<String> {
        self.items.last().map(|item| item.id.clone())
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.items.iter().position(|item| item.id == id)
    }

    pub fn get(&self, id: &str) -> Option<&Item> {
        self.items.iter().find(|item| item.id == id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Item> {
        self.items.iter_mut().find(|item| item.id == id)
    }

    pub fn delete(&mut self, id: &str) -> ApiResult<()> {
        let at = self.position(id).ok_or_else(|| not_found(id))?;
        self.items.remove(at);
        Ok(())
    }

    /// The chat messages of this conversation for a model call: the instructions as
    /// the system message, then the newest items that fit [`MAX_CONTEXT_CHARS`].
    pub fn messages(&self, instructions: &str) -> Vec<Value> {
        messages(&self.items, instructions)
    }
}

pub fn not_found(id: &str) -> ApiError {
    invalid(
        "item_id",
        format!("no item `{}` in the conversation", clip(id)),
    )
}

/// Chat messages of `items` (see [`Conversation::messages`]); consecutive function
/// calls are one assistant message with their `tool_calls`.
pub fn messages(items: &[Item], instructions: &str) -> Vec<Value> {
    let mut budget = MAX_CONTEXT_CHARS;
    let mut first = items.len();
    while first > 0 && items[first - 1].chars() <= budget {
        budget -= items[first - 1].chars();
        first -= 1;
    }
    // A chat API refuses a tool call without its output and an output without its call:
    // only answered calls (complete ones) and their outputs are sent.
    let kept = &items[first..];
    let answered = |id: &str| {
        kept.iter()
            .any(|i| matches!(&i.body, Body::FunctionCallOutput { call_id, .. } if call_id == id))
    };
    let called = |id: &str| {
        kept.iter().any(|i| {
            i.complete && matches!(&i.body, Body::FunctionCall { call_id, .. } if call_id == id)
        })
    };
    let mut messages = Vec::new();
    if !instructions.is_empty() {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    for item in kept {
        match &item.body {
            Body::Message { role, text, .. } => {
                messages.push(json!({"role": role.as_str(), "content": text}));
            }
            Body::FunctionCall { call_id, .. } if !item.complete || !answered(call_id) => {}
            Body::FunctionCallOutput { call_id, .. } if !called(call_id) => {}
            Body::FunctionCall {
                call_id,
                name,
                arguments,
            } => {
                let call = json!({"id": call_id, "type": "function",
                    "function": {"name": name, "arguments": arguments}});
                let merged = messages.last_mut().and_then(|last: &mut Value| {
                    last["tool_calls"]
                        .as_array_mut()
                        .map(|calls| calls.push(call.clone()))
                });
                if merged.is_none() {
                    messages
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
                }
            }
            Body::FunctionCallOutput { call_id, output } => {
                messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Item {
        Item::message(new_id(), Role::User, text.into(), true)
    }

    #[test]
    fn items_become_chat_messages_with_tool_calls_merged() {
        let mut conversation = Conversation::default();
        conversation
            .insert(user("What's the weather in Paris?"), None)
            .unwrap();
        for (call, city) in [("call_1", "Paris"), ("call_2", "Lyon")] {
            let item = Item::from_client(&json!({"type": "function_call", "call_id": call,
                "name": "get_weather", "arguments": format!(r#"{{"city":"{city}"}}"#)}))
            .unwrap();
            conversation.insert(item, None).unwrap();
        }
        let messages = conversation.messages("");
        assert_eq!(
            messages.len(),
            1,
            "calls not yet answered are not sent: {messages:?}"
        );
        for (call, weather) in [("call_1", "sunny"), ("call_2", "rain")] {
            let output = Item::from_client(&json!({"type": "function_call_output",
                "call_id": call, "output": weather}))
            .unwrap();
            conversation.insert(output, None).unwrap();
        }
        let orphan = Item::from_client(&json!({"type": "function_call_output",
            "call_id": "call_404", "output": "?"}))
        .unwrap();
        conversation.insert(orphan, None).unwrap();
        let messages = conversation.messages("Be brief.");
        assert_eq!(
            messages[0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(messages[1]["content"], "What's the weather in Paris?");
        assert_eq!(messages[2]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(
            messages[2]["tool_calls"][1]["function"]["name"],
            "get_weather"
        );
        assert_eq!(
            messages[3],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"})
        );
        assert_eq!(messages.len(), 5, "an output without its call is not sent");
    }

    #[test]
    fn items_go_where_asked_and_old_ones_leave_the_model_call() {
        let mut conversation = Conversation::default();
        let first = user("one");
        let first_id = first.id.clone();
        conversation.insert(first, None).unwrap();
        let third = user("three");
        assert_eq!(
            conversation.insert(third, None).unwrap(),
            Some(first_id.clone())
        );
        let second = Item::from_client(&json!({"id": "two", "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "two"}]}))
        .unwrap();
        conversation.insert(second, Some(&first_id)).unwrap();
        let texts: Vec<Value> = conversation
            .messages("")
            .iter()
            .map(|m| m["content"].clone())
            .collect();
        assert_eq!(texts, [json!("one"), json!("two"), json!("three")]);
        assert!(conversation.insert(user("x"), Some("nowhere")).is_err());
        let again = Item::from_client(&json!({"id": "two", "role": "user",
            "content": [{"type": "input_text", "text": "dup"}]}))
        .unwrap();
        assert!(conversation.insert(again, None).is_err(), "ids are unique");
        conversation.delete("two").unwrap();
        assert!(conversation.delete("two").is_err());
        // Past the context budget the oldest are left out, never an orphan tool output.
        let big = "x".repeat(MAX_ITEM_CHARS);
        let mut items = vec![
            Item::from_client(
                &json!({"type": "function_call_output", "call_id": "c", "output": "o"}),
            )
            .unwrap(),
        ];
        items.extend((0..3).map(|_| user(&big)));
        let kept = messages(&items, "");
        assert!(kept.len() < items.len());
        assert!(kept.iter().all(|m| m["role"] != "tool"));
        assert!(
            kept.iter()
                .map(|m| m["content"].as_str().unwrap().len())
                .sum::<usize>()
                <= MAX_CONTEXT_CHARS
        );
    }

    #[test]
    fn client_items_are_checked_and_shown_in_both_protocols() {
        for bad in [
            json!({"type": "message", "role": "robot", "content": [{"type": "input_text", "text": "x"}]}),
            json!({"type": "message", "role": "user", "content": []}),
            json!({"type": "message", "role": "user", "content": [{"type": "input_image"}]}),
            json!({"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": "AAAA"}]}),
            json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x".repeat(MAX_ITEM_CHARS + 1)}]}),
            json!({"type": "function_call_output", "output": "no call id"}),
            json!({"type": "reasoning"}),
            json!({"id": "", "role": "user", "content": [{"type": "input_text", "text": "x"}]}),
        ] {
            let error = Item::from_client(&bad).unwrap_err();
            assert!(error.fields.get("param").is_some(), "{bad}");
        }
        let spoken = Item::message("a".into(), Role::Assistant, "Hello.".into(), true);
        assert_eq!(spoken.describe(false)["content"][0]["type"], "output_audio");
        assert_eq!(spoken.describe(true)["content"][0]["type"], "audio");
        assert_eq!(spoken.describe(true)["content"][0]["transcript"], "Hello.");
        let written = Item::message("b".into(), Role::Assistant, "Hi.".into(), false);
        assert_eq!(written.describe(false)["content"][0]["type"], "output_text");
    }
}
