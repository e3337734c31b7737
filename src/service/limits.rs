//! Input limits and their checks. Every violation is `BAD_USER_INPUT` naming the field.

use crate::error::{Error, Result};

pub const USERNAME_CHARS: std::ops::RangeInclusive<usize> = 3..=32;
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=128;
pub const ROOM_NAME_CHARS: std::ops::RangeInclusive<usize> = 1..=64;
pub const BODY_CHARS: std::ops::RangeInclusive<usize> = 1..=4000;
pub const CLIENT_ID_CHARS: std::ops::RangeInclusive<usize> = 1..=64;
/// Largest page of rooms or messages one request may ask for.
pub const PAGE_MAX: usize = 100;
/// The page size when a request names none.
pub const PAGE_DEFAULT: usize = 50;
/// Most members one `Room.members` answer lists.
pub const MEMBERS_MAX: usize = 1000;
/// Most rooms one user may be a member of, unless `--max-rooms-per-user` says otherwise.
pub const MAX_ROOMS_PER_USER: usize = 1000;

fn length(field: &'static str, value: &str, range: std::ops::RangeInclusive<usize>) -> Result<()> {
    let n = value.chars().count();
    if range.contains(&n) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "must be {} to {} characters long (got {n})",
                range.start(),
                range.end()
            ),
        ))
    }
}

pub fn username(value: &str) -> Result<()> {
    length("username", value, USERNAME_CHARS)?;
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(Error::invalid(
            "username",
            "may contain only letters A-Z, digits, '_', '.' and '-'",
        ));
    }
    Ok(())
}

pub fn password(value: &str) -> Result<()> {
    length("password", value, PASSWORD_CHARS)
}

/// Checks a room name and returns it trimmed.
pub fn room_name(value: &str) -> Result<&str> {
    let name = value.trim();
    length("name", name, ROOM_NAME_CHARS)?;
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(name)
}

pub fn body(value: &str) -> Result<()> {
    length("body", value, BODY_CHARS)?;
    if value.trim().is_empty() {
        return Err(Error::invalid("body", "must not be blank"));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Error::invalid(
            "body",
            "must not contain control characters",
        ));
    }
    Ok(())
}

pub fn client_id(value: &str) -> Result<()> {
    length("clientId", value, CLIENT_ID_CHARS)?;
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(
            "clientId",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks a page size argument (`first`, `last`, `limit`).
pub fn page_size(field: &'static str, value: Option<i64>) -> Result<usize> {
    match value {
        None => Ok(PAGE_DEFAULT),
        Some(n) if (0..=PAGE_MAX as i64).contains(&n) => Ok(n as usize),
        Some(_) => Err(Error::invalid(
            field,
            format!("must be between 0 and {PAGE_MAX}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_inputs() {
        let cases: &[(&str, Result<()>, Option<&str>)] = &[
            ("ada", username("ada"), None),
            ("ab", username("ab"), Some("username")),
            ("a b c", username("a b c"), Some("username")),
            ("long username", username(&"a".repeat(33)), Some("username")),
            ("pass ok", password("12345678"), None),
            ("pass short", password("1234567"), Some("password")),
            ("pass long", password(&"x".repeat(129)), Some("password")),
            ("body ok", body("hello"), None),
            ("body blank", body("   "), Some("body")),
            ("body long", body(&"é".repeat(4001)), Some("body")),
            ("body 4000 chars", body(&"é".repeat(4000)), None),
            ("body bell", body("a\u{7}"), Some("body")),
            ("client id", client_id(&"c".repeat(65)), Some("clientId")),
            ("room blank", room_name("   ").map(|_| ()), Some("name")),
            (
                "room long",
                room_name(&"r".repeat(65)).map(|_| ()),
                Some("name"),
            ),
        ];
        for (name, result, field) in cases {
            match (result, field) {
                (Ok(()), None) => {}
                (Err(e), Some(field)) => assert_eq!(e.field(), Some(*field), "{name}"),
                (other, _) => panic!("{name}: unexpected {other:?}"),
            }
        }
        assert_eq!(room_name("  lobby ").unwrap(), "lobby");
        assert_eq!(page_size("first", None).unwrap(), PAGE_DEFAULT);
        assert!(page_size("first", Some(101)).is_err());
        assert!(page_size("first", Some(-1)).is_err());
    }
}
