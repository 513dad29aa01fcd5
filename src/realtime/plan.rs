//! What a response asks the chat model and how it answers: the session's settings, with
//! the `response.create` overrides, as a chat request and a [`Response`]. Pure.

use serde_json::{Value, json};

use super::config::{self, Format, Session, invalid};
use super::conversation::{self, Conversation, Item};
use super::respond::{Plan, Speech};
use super::response::Response;
use crate::error::ApiResult;

/// What a response asks the model, and how it is answered.
pub fn plan(
    session: &Session,
    conversation: &Conversation,
    beta: bool,
    params: &Value,
) -> ApiResult<(Plan, Response)> {
    if !params.is_null() && !params.is_object() {
        return Err(invalid("response", "`response` is an object".into()));
    }
    let instructions = match params.get("instructions") {
        Some(value) => config::parse_instructions(value)?,
        None => session.instructions.clone(),
    };
    let audio = match params.get("output_modalities").or(params.get("modalities")) {
        Some(value) => config::parse_modalities(value, "response.output_modalities")?,
        None => session.audio_out,
    };
    let tools = match params.get("tools") {
        Some(value) => config::parse_tools(value, "response.tools")?,
        None => session.tools.clone(),
    };
    let tool_choice = match params.get("tool_choice") {
        Some(value) => config::parse_tool_choice(value, "response.tool_choice")?,
        None => session.tool_choice.clone(),
    };
    let max_tokens = match params
        .get("max_output_tokens")
        .or(params.get("max_response_output_tokens"))
    {
        Some(value) => config::parse_max_tokens(value, "response.max_output_tokens")?,
        None => session.max_output_tokens,
    };
    let output = &params["audio"]["output"];
    let voice = output["voice"]
        .as_str()
        .or(params["voice"].as_str())
        .map_or_else(|| session.voice.clone(), str::to_owned);
    let format = match (&output["format"], params["output_audio_format"].as_str()) {
        (Value::Null, None) => session.output_format,
        (Value::Null, Some(beta)) => Format::parse_beta(beta, "response.output_audio_format")?,
        (format, _) => Format::parse(format, "response.audio.output.format")?,
    };
    let in_conversation = match params["conversation"].as_str() {
        None | Some("auto") => true,
        Some("none") => false,
        Some(other) => {
            return Err(invalid(
                "response.conversation",
                format!("`{}` is not auto or none", config::clip(other)),
            ));
        }
    };
    let metadata = params.get("metadata").cloned().unwrap_or(Value::Null);
    if !metadata.is_null() && !metadata.is_object() {
        return Err(invalid("response.metadata", "metadata is an object".into()));
    }
    let messages = match params.get("input") {
        Some(input) => input_messages(conversation, input, &instructions)?,
        None => conversation.messages(&instructions),
    };
    let mut body = json!({"model": session.model, "messages": messages});
    if !tools.is_empty() {
        body["tools"] = tools.iter().map(chat_tool).collect();
        body["tool_choice"] = chat_tool_choice(&tool_choice);
    }
    if let Some(max) = max_tokens {
        body["max_tokens"] = max.into();
    }
    if let Some(temperature) = session.temperature {
        body["temperature"] = temperature.into();
    }
    let speech = audio.then_some(Speech {
        voice,
        speed: session.speed,
        format,
    });
    let response = Response::new(beta, audio, format, in_conversation, metadata);
    Ok((Plan { body, speech }, response))
}

/// A response's own `input`: items, or references to the conversation's.
fn input_messages(
    conversation: &Conversation,
    input: &Value,
    instructions: &str,
) -> ApiResult<Vec<Value>> {
    let Some(list) = input.as_array() else {
        return Err(invalid(
            "response.input",
            "`input` is a list of items".into(),
        ));
    };
    let mut items = Vec::new();
    for entry in list {
        let item = match entry["type"].as_str() {
            Some("item_reference") => {
                let id = entry["id"].as_str().unwrap_or_default();
                conversation
                    .get(id)
                    .cloned()
                    .ok_or_else(|| conversation::not_found(id))?
            }
            _ => Item::from_client(entry)?,
        };
        items.push(item);
    }
    Ok(conversation::messages(&items, instructions))
}

/// A Realtime function tool in the chat API's shape.
fn chat_tool(tool: &Value) -> Value {
    let mut function = json!({"name": tool["name"]});
    for field in ["description", "parameters"] {
        if let Some(value) = tool.get(field).filter(|v| !v.is_null()) {
            function[field] = value.clone();
        }
    }
    json!({"type": "function", "function": function})
}

fn chat_tool_choice(choice: &Value) -> Value {
    match choice {
        Value::Object(_) => json!({"type": "function", "function": {"name": choice["name"]}}),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::config::Kind;

    #[test]
    fn tools_and_tool_choice_take_the_chat_shape() {
        let tool = json!({"type": "function", "name": "f", "description": "d",
            "parameters": {"type": "object"}});
        assert_eq!(
            chat_tool(&tool),
            json!({"type": "function", "function": {"name": "f", "description": "d",
                "parameters": {"type": "object"}}})
        );
        assert_eq!(
            chat_tool_choice(&json!({"type": "function", "name": "f"})),
            json!({"type": "function", "function": {"name": "f"}})
        );
        assert_eq!(chat_tool_choice(&json!("auto")), json!("auto"));
    }

    #[test]
    fn a_response_overrides_the_session_and_bad_overrides_name_their_param() {
        let session = Session::new(Kind::Realtime, Some("local/chat"));
        let conversation = Conversation::default();
        let params = json!({"instructions": "Be brief.", "output_modalities": ["text"],
            "max_output_tokens": 7, "output_audio_format": "g711_ulaw"});
        let (asked, _) = plan(&session, &conversation, true, &params).unwrap();
        assert_eq!(asked.body["model"], "local/chat");
        assert_eq!(asked.body["max_tokens"], 7);
        assert_eq!(asked.body["messages"][0]["content"], "Be brief.");
        assert!(asked.speech.is_none());
        let params = json!({"audio": {"output": {"format": {"type": "audio/pcma"}}}});
        let (asked, _) = plan(&session, &conversation, false, &params).unwrap();
        assert_eq!(asked.speech.unwrap().format, Format::Pcma);
        for (bad, param) in [
            (
                json!({"audio": {"output": {"format": {"type": "audio/mp3"}}}}),
                "response.audio.output.format",
            ),
            (
                json!({"output_audio_format": "mp3"}),
                "response.output_audio_format",
            ),
            (
                json!({"conversation": "elsewhere"}),
                "response.conversation",
            ),
            (json!({"metadata": 3}), "response.metadata"),
            (json!("text"), "response"),
        ] {
            let error = plan(&session, &conversation, false, &bad).err().unwrap();
            assert_eq!(error.fields["param"], param, "{bad}");
        }
    }
}
