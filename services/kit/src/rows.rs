//! Reading domain types out of database rows without the domain depending on the driver: a
//! storage module names a type's fields once with [`from_row!`](crate::from_row), and gets
//! `sqlx::FromRow` for SQLite and PostgreSQL rows.

/// Reads column `name` of a row as text and parses it (for enums stored by name).
///
/// # Errors
///
/// Fails when the column is missing or not text, or the text does not parse.
pub fn parse_column<T>(text: &str, name: &str) -> Result<T, sqlx::Error>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|error: T::Err| sqlx::Error::ColumnDecode {
            index: name.to_owned(),
            source: error.to_string().into(),
        })
}

/// Implements `sqlx::FromRow` for a struct on SQLite and PostgreSQL rows. Each field is read
/// from the column of its name; a field marked `json` from JSON text, `text` from text it
/// parses, and `skip` is left to its default (filled in later by the storage).
///
/// ```ignore
/// swarm_kit::from_row!(Task { id, status text, required_capabilities json, dependency_results skip });
/// ```
#[macro_export]
macro_rules! from_row {
    ($type:ty { $($field:ident $($how:ident)?),* $(,)? }) => {
        $crate::from_row!(@on sqlx::sqlite::SqliteRow, $type { $($field $($how)?),* });
        $crate::from_row!(@on sqlx::postgres::PgRow, $type { $($field $($how)?),* });
    };
    (@on $row:ty, $type:ty { $($field:ident $($how:ident)?),* }) => {
        impl<'r> sqlx::FromRow<'r, $row> for $type {
            fn from_row(row: &'r $row) -> Result<Self, sqlx::Error> {
                use sqlx::Row as _;
                Ok(Self {
                    $($field: $crate::from_row!(@column row, $field $($how)?),)*
                })
            }
        }
    };
    (@column $row:ident, $field:ident) => {
        $row.try_get(stringify!($field))?
    };
    (@column $row:ident, $field:ident json) => {
        $row.try_get::<sqlx::types::Json<_>, _>(stringify!($field))?.0
    };
    (@column $row:ident, $field:ident text) => {
        $crate::rows::parse_column(
            &$row.try_get::<String, _>(stringify!($field))?,
            stringify!($field),
        )?
    };
    (@column $row:ident, $field:ident skip) => {
        Default::default()
    };
}
