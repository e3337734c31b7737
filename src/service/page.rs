//! Relay-style page arguments, checked once for every list.

use super::limits;
use crate::{
    error::{Error, Result},
    model::{PageRequest, parse_id},
};

/// Relay-style page arguments as a client sent them, before checking.
#[derive(Debug, Clone, Default)]
pub struct PageArgs {
    pub first: Option<i64>,
    pub after: Option<String>,
    pub last: Option<i64>,
    pub before: Option<String>,
}

impl PageArgs {
    /// Forward paging only (`first`, `after`), as the room lists take it.
    pub fn forward(first: Option<i32>, after: Option<String>) -> Self {
        Self {
            first: first.map(i64::from),
            after,
            ..Self::default()
        }
    }

    /// Checks the arguments. With none given, `default` says which end a page starts from.
    pub fn resolve(&self, default: PageRequest) -> Result<PageRequest> {
        let cursor = |field: &'static str, value: &Option<String>| {
            value.as_deref().map(|v| parse_id(field, v)).transpose()
        };
        let after = cursor("after", &self.after)?;
        let before = cursor("before", &self.before)?;
        match (self.first, self.last) {
            (Some(_), Some(_)) => Err(Error::invalid(
                "last",
                "give either first or last, not both",
            )),
            (Some(_), None) | (None, None)
                if before.is_some() && (self.first.is_some() || after.is_some()) =>
            {
                Err(Error::invalid(
                    "before",
                    "page forwards with first/after or backwards with last/before",
                ))
            }
            (None, Some(_)) if after.is_some() => Err(Error::invalid(
                "after",
                "page forwards with first/after or backwards with last/before",
            )),
            (Some(first), None) => Ok(PageRequest::Forward {
                after,
                first: limits::page_size("first", Some(first))?,
            }),
            (None, Some(last)) => Ok(PageRequest::Backward {
                before,
                last: limits::page_size("last", Some(last))?,
            }),
            (None, None) if after.is_some() => Ok(PageRequest::Forward {
                after,
                first: limits::PAGE_DEFAULT,
            }),
            (None, None) if before.is_some() => Ok(PageRequest::Backward {
                before,
                last: limits::PAGE_DEFAULT,
            }),
            (None, None) => Ok(default),
        }
    }
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;

    fn args(
        first: Option<i64>,
        after: Option<&str>,
        last: Option<i64>,
        before: Option<&str>,
    ) -> PageArgs {
        PageArgs {
            first,
            after: after.map(Into::into),
            last,
            before: before.map(Into::into),
        }
    }

    #[test]
    fn page_arguments() {
        let id = "0123456789abcdef01234567";
        let oid = crate::model::ObjectId::parse_str(id).unwrap();
        let default = PageRequest::Backward {
            before: None,
            last: 50,
        };
        assert_eq!(
            args(None, None, None, None).resolve(default).unwrap(),
            default
        );
        assert_eq!(
            args(Some(10), Some(id), None, None)
                .resolve(default)
                .unwrap(),
            PageRequest::Forward {
                after: Some(oid),
                first: 10
            }
        );
        assert_eq!(
            args(None, None, Some(5), Some(id))
                .resolve(default)
                .unwrap(),
            PageRequest::Backward {
                before: Some(oid),
                last: 5
            }
        );
        assert_eq!(
            args(None, None, None, Some(id)).resolve(default).unwrap(),
            PageRequest::Backward {
                before: Some(oid),
                last: 50
            }
        );
        for (bad, field) in [
            (args(Some(1), None, Some(1), None), "last"),
            (args(Some(1), None, None, Some(id)), "before"),
            (args(None, Some(id), Some(1), None), "after"),
            (args(Some(101), None, None, None), "first"),
            (args(None, None, Some(-1), None), "last"),
            (args(None, Some("nope"), None, None), "after"),
        ] {
            assert_eq!(
                bad.resolve(default).unwrap_err().field(),
                Some(field),
                "{bad:?}"
            );
        }
    }
}
