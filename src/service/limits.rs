//! Input limits and their checks. Every violation is `BAD_USER_INPUT` naming the field.

use unicode_normalization::UnicodeNormalization as _;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

use crate::error::{Error, Result};

pub const USERNAME_CHARS: std::ops::RangeInclusive<usize> = 3..=32;
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=128;
pub const ROOM_NAME_CHARS: std::ops::RangeInclusive<usize> = 1..=64;
pub const BODY_CHARS: std::ops::RangeInclusive<usize> = 1..=4000;
pub const CLIENT_ID_CHARS: std::ops::RangeInclusive<usize> = 1..=64;
/// A room's topic, and the reason of a ban.
pub const TOPIC_CHARS: usize = 500;
/// Most people one message mentions; further `@names` are plain text.
pub const MENTIONS_MAX: usize = 20;
/// Most pending invitations one user may have; more are refused until some are answered.
pub const INVITATIONS_MAX: usize = 200;
/// Largest page of rooms or messages one request may ask for.
pub const PAGE_MAX: usize = 100;
/// The page size when a request names none.
pub const PAGE_DEFAULT: usize = 50;
/// Most members one `Room.members` answer lists.
pub const MEMBERS_MAX: usize = 1000;
/// Most rooms one user may be a member of, unless `--max-rooms-per-user` says otherwise.
pub const MAX_ROOMS_PER_USER: usize = 1000;

pub fn length(
    field: &'static str,
    value: &str,
    range: std::ops::RangeInclusive<usize>,
) -> Result<()> {
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

/// The one pipeline of usernames and room names, so the two cannot drift. It returns the NFC
/// form (what is stored and returned), trimmed of surrounding white space when `trim` is set,
/// and refuses:
/// - characters a reader cannot see or that render unlike what they are, anywhere in the
///   name: controls (Cc), format characters (Cf: zero-width spaces and joiners, bidi
///   overrides), unassigned (Cn) and private-use (Co) code points, and line and paragraph
///   separators (Zl, Zp);
/// - a length outside `range` (in characters of the NFC form);
/// - a name with nothing visible in it (such as a lone Hangul filler, which is a letter).
///
/// Look-alikes of other names pass here; `store::unique_key` makes them conflict.
fn name(
    field: &'static str,
    value: &str,
    trim: bool,
    range: std::ops::RangeInclusive<usize>,
) -> Result<String> {
    let name: String = value.nfc().collect();
    if let Some(c) = name.chars().find(|&c| refused_in_names(c)) {
        return Err(Error::invalid(
            field,
            format!(
                "must not contain invisible, control, unassigned or private-use characters (found U+{:04X})",
                u32::from(c)
            ),
        ));
    }
    let name = if trim { name.trim().to_owned() } else { name };
    length(field, &name, range)?;
    if crate::store::unique_key(&name).trim().is_empty() {
        return Err(Error::invalid(field, "must contain a visible character"));
    }
    Ok(name)
}

fn refused_in_names(c: char) -> bool {
    use GeneralCategory::*;
    matches!(
        c.general_category(),
        Control | Format | Unassigned | PrivateUse | LineSeparator | ParagraphSeparator | Surrogate
    )
}

/// Checks a username and returns it in NFC (the ASCII rule makes that the input itself).
pub fn username(value: &str) -> Result<String> {
    let name = name("username", value, false, USERNAME_CHARS)?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(Error::invalid(
            "username",
            "may contain only letters A-Z, digits, '_', '.' and '-'",
        ));
    }
    Ok(name)
}

pub fn password(value: &str) -> Result<()> {
    length("password", value, PASSWORD_CHARS)
}

/// Checks a room name and returns it trimmed, in NFC.
pub fn room_name(value: &str) -> Result<String> {
    name("name", value, true, ROOM_NAME_CHARS)
}

/// Checks a free text of at most [`TOPIC_CHARS`] (a topic, a reason) and returns it trimmed;
/// `None` when it is blank.
pub fn note(field: &'static str, value: &str) -> Result<Option<String>> {
    let value: String = value.trim().nfc().collect();
    if value.is_empty() {
        return Ok(None);
    }
    length(field, &value, 1..=TOPIC_CHARS)?;
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(Some(value))
}

/// The distinct usernames a body mentions as `@name` (a name's characters, after an `@` that
/// starts the body or follows a character no name has), at most [`MENTIONS_MAX`], as written:
/// a trailing `.` or `-` may be punctuation ("thanks @ada.") or part of a name ("bob-"), which
/// whoever looks the names up decides ([`without_punctuation`]).
pub fn mentioned_names(body: &str) -> Vec<String> {
    let in_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let mut names: Vec<String> = Vec::new();
    let mut previous = None;
    for (i, c) in body.char_indices() {
        let starts = c == '@' && !previous.is_some_and(in_name);
        previous = Some(c);
        if !starts {
            continue;
        }
        let rest = &body[i + 1..];
        let end = rest.find(|c: char| !in_name(c)).unwrap_or(rest.len());
        let name = &rest[..end];
        if USERNAME_CHARS.contains(&without_punctuation(name).len())
            && !names.iter().any(|n| n.eq_ignore_ascii_case(name))
        {
            names.push(name.to_owned());
            if names.len() == MENTIONS_MAX {
                break;
            }
        }
    }
    names
}

/// A mentioned name without the punctuation that may follow it.
pub fn without_punctuation(name: &str) -> &str {
    name.trim_end_matches(['.', '-'])
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
            ("ada", username("ada").map(|_| ()), None),
            ("ab", username("ab").map(|_| ()), Some("username")),
            ("a b c", username("a b c").map(|_| ()), Some("username")),
            (
                "long username",
                username(&"a".repeat(33)).map(|_| ()),
                Some("username"),
            ),
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
        assert_eq!(username("ada.b-c_9").unwrap(), "ada.b-c_9");
        assert_eq!(page_size("first", None).unwrap(), PAGE_DEFAULT);
        assert!(page_size("first", Some(101)).is_err());
        assert!(page_size("first", Some(-1)).is_err());
    }

    /// Characters no name may contain, one of each refused general category, anywhere in the
    /// name (even at an end that trimming would drop).
    #[test]
    fn names_refuse_invisible_and_unassigned_characters() {
        let refused = [
            ("Cc null", "\u{0}"),
            ("Cc bell", "\u{7}"),
            ("Cc newline", "\n"),
            ("Cc next line", "\u{85}"),
            ("Cf zero-width space", "\u{200B}"),
            ("Cf zero-width joiner", "\u{200D}"),
            ("Cf right-to-left override", "\u{202E}"),
            ("Cf left-to-right isolate", "\u{2066}"),
            ("Cf soft hyphen", "\u{AD}"),
            ("Cf byte order mark", "\u{FEFF}"),
            ("Cn unassigned", "\u{378}"),
            ("Cn noncharacter", "\u{FFFF}"),
            ("Co private use", "\u{E000}"),
            ("Co supplementary private use", "\u{F0000}"),
            ("Zl line separator", "\u{2028}"),
            ("Zp paragraph separator", "\u{2029}"),
        ];
        for (what, c) in refused {
            for name in [
                format!("lob{c}by"),
                format!("lobby{c}"),
                format!("{c}lobby"),
            ] {
                let room = room_name(&name).unwrap_err();
                assert_eq!(
                    (room.code().as_str(), room.field()),
                    ("BAD_USER_INPUT", Some("name")),
                    "room {what}: {name:?}"
                );
                let user = username(&name).unwrap_err();
                assert_eq!(
                    (user.code().as_str(), user.field()),
                    ("BAD_USER_INPUT", Some("username")),
                    "user {what}: {name:?}"
                );
                assert!(room.to_string().contains("invisible"), "{what}: {room}");
            }
        }
    }

    #[test]
    fn names_are_stored_in_nfc() {
        let cases = [
            // e + combining acute becomes precomposed é.
            ("cafe\u{301}", "caf\u{E9}"),
            ("caf\u{E9}", "caf\u{E9}"),
            // Hangul jamo compose into one syllable.
            ("\u{1100}\u{1161}", "\u{AC00}"),
            // The Angstrom sign is canonically Å.
            ("\u{212B}ngstr\u{F6}m", "\u{C5}ngstr\u{F6}m"),
            // Allowed: other scripts, spaces inside, emoji with a variation selector.
            (
                "  \u{43B}\u{43E}\u{431}\u{431}\u{438} chat ",
                "\u{43B}\u{43E}\u{431}\u{431}\u{438} chat",
            ),
            ("\u{2764}\u{FE0F} club", "\u{2764}\u{FE0F} club"),
        ];
        for (input, stored) in cases {
            assert_eq!(room_name(input).unwrap(), stored, "{input:?}");
        }
        // Length counts the NFC form: 64 precomposed characters fit, though the input had 128.
        assert!(room_name(&"e\u{301}".repeat(64)).is_ok());
        // A name with nothing visible in it is refused.
        let err = room_name("\u{3164}").unwrap_err();
        assert_eq!(err.field(), Some("name"));
        assert!(err.to_string().contains("visible"), "{err}");
        // Usernames stay ASCII: a precomposed letter is still refused, naming the field.
        let err = username("caf\u{E9}").unwrap_err();
        assert_eq!(err.field(), Some("username"));
    }

    #[test]
    fn mentions_are_names_after_an_at_sign() {
        assert_eq!(
            mentioned_names("@ada hi @bob, and thanks @cid. Mail me at eve@example.org @ADA @x"),
            ["ada", "bob", "cid."]
        );
        assert_eq!(
            mentioned_names("(@dan_1) @e.f-g- @@hal"),
            ["dan_1", "e.f-g-", "hal"]
        );
        assert_eq!(without_punctuation("e.f-g-"), "e.f-g");
        let many: String = (0..30).map(|i| format!("@user{i} ")).collect();
        assert_eq!(mentioned_names(&many).len(), MENTIONS_MAX);
    }
}
