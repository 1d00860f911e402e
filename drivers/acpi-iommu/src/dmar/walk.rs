//! Walking a list of length-prefixed entries twice: once, fallibly, when the table is parsed,
//! and again, infallibly, whenever a caller iterates. Both walks run the same entry parser, so
//! a list that validated once yields exactly the entries that were checked.
use crate::reader::{ParseError, Reader};

/// Parses one entry at the cursor and advances past it.
pub(crate) type EntryParser<'a, T> = fn(&mut Reader<'a>) -> Result<T, ParseError>;

/// Checks every entry of `list`; the first malformed one is the error.
pub(crate) fn validate<'a, T>(
    mut list: Reader<'a>,
    parse: EntryParser<'a, T>,
) -> Result<(), ParseError> {
    while !list.is_empty() {
        parse(&mut list)?;
    }
    Ok(())
}

/// The next entry of an already validated list. Should an entry fail anyway (it cannot: the
/// bytes are the ones validated), the walk ends instead of panicking.
pub(crate) fn next_validated<'a, T>(list: &mut Reader<'a>, parse: EntryParser<'a, T>) -> Option<T> {
    if list.is_empty() {
        return None;
    }
    match parse(list) {
        Ok(entry) => Some(entry),
        Err(_) => {
            list.rest();
            None
        }
    }
}
