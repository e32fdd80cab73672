//! Values bound to statements and read back from rows, the same way on both backends.
//!
//! Statements bind [`Value`]s: integers, reals, text, bytes or a typed NULL (PostgreSQL needs to
//! know what a NULL stands for). Rows are read into tuples of [`FromColumn`] types, in column
//! order: `let (name, born): (String, i64) = sql.query_one(…).await?;`.

use sqlx::postgres::PgRow;
use sqlx::{Row as _, TypeInfo as _, ValueRef as _};

use crate::error::DbError;

/// A statement parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// A 64-bit integer (`BIGINT`; booleans are stored as 0 and 1).
    Int(i64),
    /// A double-precision number.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes (`BLOB` / `BYTEA`).
    Blob(&'a [u8]),
    /// NULL, standing for a value of this kind.
    Null(ValueKind),
}

/// The kind of a [`Value`]: what a NULL stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// An integer.
    Int,
    /// A real.
    Real,
    /// Text.
    Text,
    /// Bytes.
    Blob,
}

impl From<i64> for Value<'_> {
    fn from(value: i64) -> Self {
        Self::Int(value)
    }
}

impl From<i32> for Value<'_> {
    fn from(value: i32) -> Self {
        Self::Int(i64::from(value))
    }
}

impl From<u32> for Value<'_> {
    fn from(value: u32) -> Self {
        Self::Int(i64::from(value))
    }
}

impl From<bool> for Value<'_> {
    fn from(value: bool) -> Self {
        Self::Int(i64::from(value))
    }
}

impl From<f64> for Value<'_> {
    fn from(value: f64) -> Self {
        Self::Real(value)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(value: &'a str) -> Self {
        Self::Text(value)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(value: &'a String) -> Self {
        Self::Text(value)
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(value: &'a [u8]) -> Self {
        Self::Blob(value)
    }
}

impl<'a> From<&'a Vec<u8>> for Value<'a> {
    fn from(value: &'a Vec<u8>) -> Self {
        Self::Blob(value)
    }
}

/// Types whose NULL has a known kind.
pub trait Nullable<'a>: Into<Value<'a>> {
    /// What a NULL of this type stands for.
    const KIND: ValueKind;
}

impl Nullable<'_> for i64 {
    const KIND: ValueKind = ValueKind::Int;
}
impl Nullable<'_> for i32 {
    const KIND: ValueKind = ValueKind::Int;
}
impl Nullable<'_> for u32 {
    const KIND: ValueKind = ValueKind::Int;
}
impl Nullable<'_> for bool {
    const KIND: ValueKind = ValueKind::Int;
}
impl Nullable<'_> for f64 {
    const KIND: ValueKind = ValueKind::Real;
}
impl<'a> Nullable<'a> for &'a str {
    const KIND: ValueKind = ValueKind::Text;
}
impl<'a> Nullable<'a> for &'a String {
    const KIND: ValueKind = ValueKind::Text;
}
impl<'a> Nullable<'a> for &'a [u8] {
    const KIND: ValueKind = ValueKind::Blob;
}

impl<'a, T: Nullable<'a>> From<Option<T>> for Value<'a> {
    fn from(value: Option<T>) -> Self {
        match value {
            Some(value) => value.into(),
            None => Self::Null(T::KIND),
        }
    }
}

/// One row of a result, on either backend.
#[derive(Debug)]
pub struct Row<'r>(RowInner<'r>);

#[derive(Debug)]
enum RowInner<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r PgRow),
}

impl<'r> Row<'r> {
    pub(crate) fn sqlite(row: &'r rusqlite::Row<'r>) -> Self {
        Self(RowInner::Sqlite(row))
    }

    pub(crate) fn postgres(row: &'r PgRow) -> Self {
        Self(RowInner::Postgres(row))
    }

    /// Column `index` (from 0) as `T`.
    pub fn get<T: FromColumn>(&self, index: usize) -> Result<T, DbError> {
        T::from_column(self, index)
    }

    fn integer(&self, index: usize) -> Result<Option<i64>, DbError> {
        match &self.0 {
            RowInner::Sqlite(row) => row
                .get::<_, Option<i64>>(index)
                .map_err(|error| DbError::sqlite("reading an integer column", error)),
            RowInner::Postgres(row) => {
                let raw = row
                    .try_get_raw(index)
                    .map_err(|error| DbError::postgres("reading an integer column", error))?;
                if raw.is_null() {
                    return Ok(None);
                }
                let read = match raw.type_info().name() {
                    "INT2" => row.try_get::<i16, _>(index).map(i64::from),
                    "INT4" => row.try_get::<i32, _>(index).map(i64::from),
                    "BOOL" => row.try_get::<bool, _>(index).map(i64::from),
                    _ => row.try_get::<i64, _>(index),
                };
                read.map(Some)
                    .map_err(|error| DbError::postgres("reading an integer column", error))
            }
        }
    }

    fn real(&self, index: usize) -> Result<Option<f64>, DbError> {
        match &self.0 {
            RowInner::Sqlite(row) => row
                .get::<_, Option<f64>>(index)
                .map_err(|error| DbError::sqlite("reading a real column", error)),
            RowInner::Postgres(row) => {
                let raw = row
                    .try_get_raw(index)
                    .map_err(|error| DbError::postgres("reading a real column", error))?;
                if raw.is_null() {
                    return Ok(None);
                }
                let read = match raw.type_info().name() {
                    "FLOAT4" => row.try_get::<f32, _>(index).map(f64::from),
                    _ => row.try_get::<f64, _>(index),
                };
                read.map(Some)
                    .map_err(|error| DbError::postgres("reading a real column", error))
            }
        }
    }

    fn text(&self, index: usize) -> Result<Option<String>, DbError> {
        match &self.0 {
            RowInner::Sqlite(row) => row
                .get::<_, Option<String>>(index)
                .map_err(|error| DbError::sqlite("reading a text column", error)),
            RowInner::Postgres(row) => row
                .try_get::<Option<String>, _>(index)
                .map_err(|error| DbError::postgres("reading a text column", error)),
        }
    }

    fn blob(&self, index: usize) -> Result<Option<Vec<u8>>, DbError> {
        match &self.0 {
            RowInner::Sqlite(row) => row
                .get::<_, Option<Vec<u8>>>(index)
                .map_err(|error| DbError::sqlite("reading a binary column", error)),
            RowInner::Postgres(row) => row
                .try_get::<Option<Vec<u8>>, _>(index)
                .map_err(|error| DbError::postgres("reading a binary column", error)),
        }
    }
}

/// A type one column can be read as.
pub trait FromColumn: Sized {
    /// Reads column `index` of `row`.
    fn from_column(row: &Row<'_>, index: usize) -> Result<Self, DbError>;
}

fn not_null<T>(value: Option<T>, index: usize) -> Result<T, DbError> {
    value.ok_or_else(|| DbError::corrupt("reading a row", format_args!("column {index} (NULL)")))
}

impl FromColumn for i64 {
    fn from_column(row: &Row<'_>, index: usize) -> Result<Self, DbError> {
        not_null(row.integer(index)?, index)
    }
}

impl FromColumn for Option<i64> {
    fn from_column(row: &Row<'_>, index: usize) -> Result<Self, DbError> {
        row.integer(index)
    }
}

impl FromColumn for bool {
    fn from_column(row: &Row<'_>, index: usize) -> Result<Self, DbError> {
        Ok(not_null(row.integer(index)?, index)? != 0)
    }
}

impl FromColumn for f64 {
    fn from_column(row: &Row<'_>, index: usize) -> Result<Self, DbError> {
        not_null(row.real(index)?, index)
    }
}

impl FromColumn for Option<f64> {
    fn from_column(row: &Row<'_>, index: usize) -> Result<Self, DbError> {
        row.real(index)
    }
}

impl FromColumn for String {
    fn from_column(row: &Row<'_>, index: usize) -> Result<Self, DbError> {
        not_null(row.text(index)?, index)
    }
}

impl FromColumn for Option<String> {
    fn from_column(row: &Row<'_>, index: usize) -> Result<Self, DbError> {
        row.text(index)
    }
}

impl FromColumn for Vec<u8> {
    fn from_column(row: &Row<'_>, index: usize) -> Result<Self, DbError> {
        not_null(row.blob(index)?, index)
    }
}

impl FromColumn for Option<Vec<u8>> {
    fn from_column(row: &Row<'_>, index: usize) -> Result<Self, DbError> {
        row.blob(index)
    }
}

/// A type a whole row can be read as: tuples of [`FromColumn`] types, in column order.
pub trait FromRow: Sized {
    /// Reads `row`.
    fn from_row(row: &Row<'_>) -> Result<Self, DbError>;
}

macro_rules! tuple_from_row {
    ($($name:ident $index:tt),+) => {
        impl<$($name: FromColumn),+> FromRow for ($($name,)+) {
            fn from_row(row: &Row<'_>) -> Result<Self, DbError> {
                Ok(($($name::from_column(row, $index)?,)+))
            }
        }
    };
}

tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14, P 15);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14, P 15, Q 16);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14, P 15, Q 16, R 17);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14, P 15, Q 16, R 17, S 18);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14, P 15, Q 16, R 17, S 18, T 19);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14, P 15, Q 16, R 17, S 18, T 19, U 20);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14, P 15, Q 16, R 17, S 18, T 19, U 20, V 21);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14, P 15, Q 16, R 17, S 18, T 19, U 20, V 21, W 22);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14, P 15, Q 16, R 17, S 18, T 19, U 20, V 21, W 22, X 23);
