//! Reading REST requests: JSON bodies and query strings, with every mistake a 400 (or 413)
//! naming the field, never axum's plain-text rejections.

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{FromRequest, Request, rejection::BytesRejection},
    http::StatusCode,
};
use serde::de::DeserializeOwned;

use super::RestError;
use crate::{error::Error, service::limits};

/// A JSON request body of type `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = RestError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // JSON only: a `text/plain` body is what a cross-site form can send without asking.
        let content_type = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json(content_type) {
            return Err(RestError::unsupported_media_type());
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(unreadable)?;
        parse(&bytes).map(JsonBody).map_err(RestError::in_request)
    }
}

/// `application/json`, or another `+json` type, with any parameters.
fn is_json(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

fn unreadable(rejection: BytesRejection) -> RestError {
    let reason = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        format!("is larger than {} bytes", crate::http::MAX_BODY)
    } else {
        "could not be read".to_owned()
    };
    RestError::too_large_or_invalid(rejection.status(), reason)
}

/// Parses a JSON body, naming the field that is missing or of the wrong type.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    // serde would read a struct from a JSON array too; the routes take objects only.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(Error::invalid("body", "must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return Error::invalid("body", format!("is not valid JSON ({inner})"));
        }
        let message = inner.to_string();
        // serde names a missing field only in its message: "missing field `roomname` at …".
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        match missing {
            Some(field) => Error::invalid(field.to_owned(), "is required"),
            None if path == "." => Error::invalid("body", "must be a JSON object"),
            None => Error::invalid(path, "has the wrong type (expected a string)"),
        }
    })?;
    // One JSON object and nothing after it.
    deserializer
        .end()
        .map_err(|e| Error::invalid("body", format!("has data after the JSON object ({e})")))?;
    Ok(value)
}

/// Parses a query string, keeping only `known` names and refusing a name given twice.
pub fn query(raw: Option<&str>, known: &[&str]) -> Result<HashMap<String, String>, Error> {
    let mut params = HashMap::new();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if !known.contains(&key.as_ref()) {
            continue;
        }
        if params
            .insert(key.clone().into_owned(), value.into_owned())
            .is_some()
        {
            return Err(Error::invalid(key.into_owned(), "is given more than once"));
        }
    }
    Ok(params)
}

/// The `limit` of a page: 1 to 100, 50 when absent.
pub fn limit(value: Option<&String>) -> Result<i64, Error> {
    let Some(value) = value else {
        return Ok(limits::PAGE_DEFAULT as i64);
    };
    match value.trim().parse::<i64>() {
        Ok(n) if (1..=limits::PAGE_MAX as i64).contains(&n) => Ok(n),
        _ => Err(Error::invalid(
            "limit",
            format!("must be a whole number from 1 to {}", limits::PAGE_MAX),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Room {
        roomname: String,
        #[serde(rename = "userID")]
        user_id: Option<String>,
    }

    fn field(bytes: &[u8]) -> String {
        parse::<Room>(bytes)
            .unwrap_err()
            .field()
            .unwrap_or("<none>")
            .to_owned()
    }

    #[test]
    fn mistakes_name_their_field() {
        assert_eq!(field(b""), "body");
        assert_eq!(field(b"{not json"), "body");
        assert_eq!(field(b"[1, 2]"), "body");
        assert_eq!(field(b"{}"), "roomname");
        assert_eq!(field(br#"{"roomname": 5}"#), "roomname");
        assert_eq!(field(br#"{"roomname": "x", "userID": []}"#), "userID");
        assert!(parse::<Room>(br#"{"roomname": "x", "extra": 1}"#).is_ok());
        assert_eq!(field(br#"{"roomname": "x"}garbage"#), "body");
        assert_eq!(field(br#"{"roomname": "x"} {"roomname": "y"}"#), "body");
    }

    #[test]
    fn only_json_content_types_are_read() {
        for json in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            assert!(is_json(json), "{json}");
        }
        for other in [
            "",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
        ] {
            assert!(!is_json(other), "{other}");
        }
    }

    #[test]
    fn limits_and_queries() {
        assert_eq!(limit(None).unwrap(), 50);
        assert_eq!(limit(Some(&"100".into())).unwrap(), 100);
        for bad in ["0", "101", "-1", "ten", ""] {
            assert_eq!(
                limit(Some(&bad.into())).unwrap_err().field(),
                Some("limit"),
                "{bad}"
            );
        }
        let params = query(Some("limit=5&x=1&before=abc"), &["limit", "before"]).unwrap();
        assert_eq!(params.len(), 2);
        assert!(query(Some("limit=1&limit=2"), &["limit"]).is_err());
    }
}
