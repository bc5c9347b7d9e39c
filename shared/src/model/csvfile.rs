//! Reading a contacts CSV, streaming and synchronous (the csv crate): the UTF-8 BOM,
//! the sniffed delimiter (`,` `;` tab), the declared encoding, the header → field
//! mapping, and each record as a typed contact row or a failed row with its errors.
//!
//! Line numbers are the physical line where a record starts, the header being line 1
//! (a quoted field with newlines spans several lines; the record keeps its first).
//! Byte offsets are where the next record starts, so a reader can be reopened there
//! (an S3 ranged GET) and go on with the same line numbers.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;

use encoding_rs::Encoding;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::{EmailAddress, Locale, TimeZone};

/// Bytes read from the start of a file to find the BOM, delimiter and header.
pub const SNIFF_BYTES: usize = 64 * 1024;
/// Default cap on one record's bytes; a longer record fails alone.
pub const DEFAULT_MAX_ROW_BYTES: usize = 64 * 1024;
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Where one column's values go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Email,
    FirstName,
    LastName,
    ExternalId,
    TimeZone,
    Locale,
    /// A custom attribute of this name (numbers and booleans typed).
    Attribute(String),
    Ignore,
}

impl Target {
    /// Parses a mapping target: `email`, `first_name`, `last_name`, `external_id`,
    /// `time_zone`, `locale`, `ignore` or `attributes.<name>`.
    pub fn parse(s: &str) -> Result<Target, String> {
        Ok(match s {
            "email" => Target::Email,
            "first_name" => Target::FirstName,
            "last_name" => Target::LastName,
            "external_id" => Target::ExternalId,
            "time_zone" => Target::TimeZone,
            "locale" => Target::Locale,
            "ignore" => Target::Ignore,
            other => match other.strip_prefix("attributes.") {
                Some(name) if !name.is_empty() && name.chars().count() <= 128 => {
                    Target::Attribute(name.to_string())
                }
                _ => {
                    return Err(format!(
                        "{s:?} is not a target: use email, first_name, last_name, external_id, \
                         time_zone, locale, ignore or attributes.<name>"
                    ));
                }
            },
        })
    }

    pub fn as_string(&self) -> String {
        match self {
            Target::Email => "email".into(),
            Target::FirstName => "first_name".into(),
            Target::LastName => "last_name".into(),
            Target::ExternalId => "external_id".into(),
            Target::TimeZone => "time_zone".into(),
            Target::Locale => "locale".into(),
            Target::Attribute(n) => format!("attributes.{n}"),
            Target::Ignore => "ignore".into(),
        }
    }

    /// The target a header name means when the mapping does not say: known names are
    /// recognised case- and punctuation-insensitively; an empty header is ignored; any
    /// other column becomes an attribute of the header's name.
    pub fn detect(header: &str) -> Target {
        let h = header.trim();
        let norm: String = h
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect();
        match norm.as_str() {
            "" => Target::Ignore,
            "email" | "emailaddress" | "mail" | "emailadress" | "mailaddress" | "emails" => {
                Target::Email
            }
            "firstname" | "first" | "givenname" | "fname" | "forename" => Target::FirstName,
            "lastname" | "last" | "surname" | "familyname" | "lname" => Target::LastName,
            "externalid" | "extid" => Target::ExternalId,
            "timezone" | "tz" => Target::TimeZone,
            "locale" | "language" | "lang" => Target::Locale,
            _ if h.chars().count() > 128 => Target::Ignore,
            _ => Target::Attribute(h.to_string()),
        }
    }
}

/// How to read the file: what the user declared or what was sniffed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format {
    pub delimiter: u8,
    /// An encoding_rs name (`UTF-8`, `windows-1252`, …).
    pub encoding: String,
    /// Byte offset of the header (3 after a UTF-8 BOM).
    pub header_offset: u64,
}

impl Format {
    fn encoding(&self) -> &'static Encoding {
        Encoding::for_label(self.encoding.as_bytes()).unwrap_or(encoding_rs::UTF_8)
    }
    pub fn delimiter_name(&self) -> &'static str {
        match self.delimiter {
            b';' => "semicolon",
            b'\t' => "tab",
            _ => "comma",
        }
    }
}

/// Parses a declared encoding label (`latin1`, `windows-1252`, `utf-8`, …). Only
/// ASCII-compatible encodings: the CSV's structure bytes must mean what they say.
pub fn parse_encoding(label: &str) -> Result<String, String> {
    match Encoding::for_label(label.trim().as_bytes()) {
        Some(e) if e.is_ascii_compatible() => Ok(e.name().to_string()),
        Some(_) => Err(format!(
            "{label:?} is not supported: convert the file to UTF-8 first"
        )),
        None => Err(format!(
            "{label:?} is not an encoding name (utf-8, latin1, windows-1252, …)"
        )),
    }
}

/// Parses a declared delimiter: `,` `;` or a tab (also `comma`, `semicolon`, `tab`).
pub fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "," | "comma" => Ok(b','),
        ";" | "semicolon" => Ok(b';'),
        "\t" | "tab" => Ok(b'\t'),
        _ => Err(format!(
            "{s:?} is not a delimiter: use comma, semicolon or tab"
        )),
    }
}

/// Finds the BOM and the delimiter from the first bytes of a file. The delimiter is the
/// one of `,` `;` tab that occurs most often outside quotes on the header line.
pub fn sniff(prefix: &[u8], declared: Option<u8>, encoding: &str) -> Format {
    let bom = if prefix.starts_with(UTF8_BOM) { 3 } else { 0 };
    let delimiter = declared.unwrap_or_else(|| {
        let mut counts = [0usize; 3];
        let mut quoted = false;
        for &b in &prefix[bom..] {
            match b {
                b'"' => quoted = !quoted,
                b'\n' | b'\r' if !quoted => break,
                b',' if !quoted => counts[0] += 1,
                b';' if !quoted => counts[1] += 1,
                b'\t' if !quoted => counts[2] += 1,
                _ => {}
            }
        }
        let best = (0..3).max_by_key(|&i| (counts[i], 3 - i)).unwrap_or(0);
        if counts[best] == 0 {
            b','
        } else {
            [b',', b';', b'\t'][best]
        }
    });
    Format {
        delimiter,
        encoding: encoding.to_string(),
        header_offset: bom as u64,
    }
}

/// One column of the file and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Column {
    pub header: String,
    /// The target as a string (see [`Target::parse`]).
    pub target: String,
}

/// Why a file cannot be imported at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("the file is empty: a header row is required")]
    Empty,
    #[error("no email column: name one (email, e-mail, email address, …) or map a column to email")]
    NoEmailColumn,
    #[error("the mapping names the column {0:?}, which the header does not have")]
    UnknownColumn(String),
    #[error("the header maps two columns to {0}")]
    DuplicateTarget(String),
    #[error("the header is not valid text in the declared encoding ({0})")]
    BadHeader(String),
    #[error("reading the file failed: {0}")]
    Io(String),
}

/// Resolves the header against the user's mapping (header name → target; exact, then
/// case-insensitive). Exactly one column must be the email.
pub fn resolve_columns(
    headers: &[String],
    mapping: &HashMap<String, String>,
) -> Result<Vec<Column>, FileError> {
    for name in mapping.keys() {
        let known = headers
            .iter()
            .any(|h| h.trim() == name.trim() || h.trim().eq_ignore_ascii_case(name.trim()));
        if !known {
            return Err(FileError::UnknownColumn(name.clone()));
        }
    }
    let mut cols = Vec::with_capacity(headers.len());
    let mut seen: Vec<Target> = vec![];
    for h in headers {
        let explicit = mapping.get(h).or_else(|| {
            mapping
                .iter()
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(h.trim()))
                .map(|(_, v)| v)
        });
        let mut target = match explicit {
            Some(t) => Target::parse(t).map_err(|_| FileError::UnknownColumn(h.clone()))?,
            None => Target::detect(h),
        };
        if target != Target::Ignore && seen.contains(&target) {
            if explicit.is_some() {
                return Err(FileError::DuplicateTarget(target.as_string()));
            }
            // A second detected column for the same field: keep it as an attribute.
            target = Target::Attribute(h.trim().to_string());
            if seen.contains(&target) {
                target = Target::Ignore;
            }
        }
        if target != Target::Ignore {
            seen.push(target.clone());
        }
        cols.push(Column {
            header: h.clone(),
            target: target.as_string(),
        });
    }
    if !seen.contains(&Target::Email) {
        return Err(FileError::NoEmailColumn);
    }
    Ok(cols)
}

/// One cell that failed: where, what, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellError {
    pub line: u64,
    /// The column's header (empty when the error is about the whole row).
    pub column: String,
    pub value: String,
    pub reason: String,
}

/// A row ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactRow {
    pub line: u64,
    pub email: EmailAddress,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub external_id: Option<String>,
    pub time_zone: Option<String>,
    pub locale: Option<String>,
    pub attributes: Map<String, Json>,
}

/// One record of the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Row(ContactRow),
    /// A record that cannot be imported, with every reason.
    Failed(Vec<CellError>),
}

impl Record {
    pub fn line(&self) -> u64 {
        match self {
            Record::Row(r) => r.line,
            Record::Failed(e) => e.first().map(|e| e.line).unwrap_or(0),
        }
    }
}

/// Reads the header of a file from its start: sniffs the format, returns it with the
/// header names and a reader positioned at the first data record.
pub fn open<R: Read>(
    mut input: R,
    declared_delimiter: Option<u8>,
    encoding: &str,
    max_row_bytes: usize,
) -> Result<Opened<R>, FileError> {
    let mut prefix = Vec::with_capacity(SNIFF_BYTES);
    (&mut input)
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut prefix)
        .map_err(|e| FileError::Io(e.to_string()))?;
    let format = sniff(&prefix, declared_delimiter, encoding);
    let body = &prefix[format.header_offset as usize..];
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(FileError::Empty);
    }
    let mut head = std::io::Cursor::new(prefix);
    head.set_position(format.header_offset);
    let reader = head.chain(input);
    let mut rows = Rows::new(
        reader,
        &format,
        format.header_offset,
        1,
        vec![],
        max_row_bytes,
    );
    let mut header = csv::ByteRecord::new();
    match rows.rdr.read_byte_record(&mut header) {
        Ok(true) => {}
        Ok(false) => return Err(FileError::Empty),
        Err(e) => return Err(FileError::Io(e.to_string())),
    }
    let enc = format.encoding();
    let mut names = Vec::with_capacity(header.len());
    for field in header.iter() {
        match decode(enc, field) {
            Ok(s) => names.push(s.trim().to_string()),
            Err(at) => {
                return Err(FileError::BadHeader(format!(
                    "byte 0x{:02X} is not {}",
                    field[at],
                    enc.name()
                )));
            }
        }
    }
    // Trailing empty header cells are kept as ignored columns.
    Ok((format, names, rows))
}

/// A file opened at its start: its format, header names, and the data records.
pub type Opened<R> = (Format, Vec<String>, Rows<FileStart<R>>);

/// A file read from its start: the sniffed prefix, then the rest.
pub type FileStart<R> = std::io::Chain<std::io::Cursor<Vec<u8>>, R>;

/// Decodes one field; `Err(index)` is the first byte that is not valid.
fn decode<'a>(enc: &'static Encoding, bytes: &'a [u8]) -> Result<Cow<'a, str>, usize> {
    if enc == encoding_rs::UTF_8 {
        std::str::from_utf8(bytes)
            .map(Cow::Borrowed)
            .map_err(|e| e.valid_up_to())
    } else {
        let (s, had_errors) = enc.decode_without_bom_handling(bytes);
        if had_errors { Err(0) } else { Ok(s) }
    }
}

/// The data records of a file, from a byte offset on.
pub struct Rows<R: Read> {
    rdr: csv::Reader<R>,
    record: csv::ByteRecord,
    columns: Vec<(String, Target)>,
    encoding: &'static Encoding,
    base_byte: u64,
    base_line: u64,
    max_row_bytes: usize,
}

impl<R: Read> Rows<R> {
    /// A reader over `input`, which starts at byte `offset` of the file, on line `line`.
    pub fn new(
        input: R,
        format: &Format,
        offset: u64,
        line: u64,
        columns: Vec<Column>,
        max_row_bytes: usize,
    ) -> Self {
        let rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(format.delimiter)
            // Only LF ends a record (a CR before it is trimmed with the field): csv counts
            // lines wrongly after CRLF terminators otherwise.
            .terminator(csv::Terminator::Any(b'\n'))
            .buffer_capacity(64 * 1024)
            .from_reader(input);
        Rows {
            rdr,
            record: csv::ByteRecord::new(),
            columns: columns
                .into_iter()
                .map(|c| {
                    let t = Target::parse(&c.target).unwrap_or(Target::Ignore);
                    (c.header, t)
                })
                .collect(),
            encoding: format.encoding(),
            base_byte: offset,
            base_line: line,
            max_row_bytes,
        }
    }

    /// Sets the columns (after the header was read and resolved).
    pub fn set_columns(&mut self, columns: Vec<Column>) {
        self.columns = columns
            .into_iter()
            .map(|c| {
                let t = Target::parse(&c.target).unwrap_or(Target::Ignore);
                (c.header, t)
            })
            .collect();
    }

    /// The byte offset where the next record starts.
    pub fn offset(&self) -> u64 {
        self.base_byte + self.rdr.position().byte()
    }

    /// The line on which the next record starts.
    pub fn line(&self) -> u64 {
        self.base_line + self.rdr.position().line() - 1
    }

    /// The next record, `None` at the end. Blank lines (and rows of empty cells) are
    /// skipped. An I/O error ends the file (the caller fails or retries the import).
    pub fn next_record(&mut self) -> Result<Option<Record>, FileError> {
        loop {
            let line = self.line();
            match self.rdr.read_byte_record(&mut self.record) {
                Ok(false) => return Ok(None),
                Ok(true) => {}
                Err(e) => return Err(FileError::Io(e.to_string())),
            }
            // csv counts the line where the record starts; blank lines before it move it.
            let line = self
                .record
                .position()
                .map(|p| self.base_line + p.line() - 1)
                .unwrap_or(line);
            if self
                .record
                .iter()
                .all(|f| f.iter().all(u8::is_ascii_whitespace))
            {
                continue;
            }
            return Ok(Some(self.typed(line)));
        }
    }

    fn typed(&self, line: u64) -> Record {
        let rec = &self.record;
        if rec.as_slice().len() > self.max_row_bytes {
            return Record::Failed(vec![CellError {
                line,
                column: String::new(),
                value: String::new(),
                reason: format!("the row is longer than {} bytes", self.max_row_bytes),
            }]);
        }
        let mut errors = vec![];
        if rec.len() > self.columns.len() {
            let extra = rec.iter().skip(self.columns.len());
            if extra
                .clone()
                .any(|f| !f.iter().all(u8::is_ascii_whitespace))
            {
                errors.push(CellError {
                    line,
                    column: String::new(),
                    value: String::new(),
                    reason: format!(
                        "the row has {} fields; the header has {}",
                        rec.len(),
                        self.columns.len()
                    ),
                });
                return Record::Failed(errors);
            }
        }
        let mut email = None;
        let mut row = RowFields {
            first_name: None,
            last_name: None,
            external_id: None,
            time_zone: None,
            locale: None,
            attributes: Map::new(),
        };
        for (i, (header, target)) in self.columns.iter().enumerate() {
            let raw = rec.get(i).unwrap_or(b"");
            let mut fail = |value: &str, reason: String| {
                errors.push(CellError {
                    line,
                    column: header.clone(),
                    value: value.chars().take(200).collect(),
                    reason,
                })
            };
            if *target == Target::Ignore {
                continue;
            }
            let text = match decode(self.encoding, raw) {
                Ok(t) => t,
                Err(at) => {
                    let lossy = String::from_utf8_lossy(raw);
                    fail(
                        &lossy,
                        format!(
                            "byte 0x{:02X} is not valid {}: declare the file's encoding \
                             (for example \"encoding\": \"windows-1252\")",
                            raw.get(at).copied().unwrap_or(0),
                            self.encoding.name()
                        ),
                    );
                    continue;
                }
            };
            let v = text.trim();
            if v.is_empty() {
                if *target == Target::Email {
                    fail("", "the email is missing".into());
                }
                continue;
            }
            match target {
                Target::Email => match EmailAddress::parse(v) {
                    Ok(e) => email = Some(e),
                    Err(reason) => fail(v, format!("is not a valid email address: {reason}")),
                },
                Target::FirstName | Target::LastName => match super::parse_text(v, 200) {
                    Ok(s) => {
                        if *target == Target::FirstName {
                            row.first_name = Some(s)
                        } else {
                            row.last_name = Some(s)
                        }
                    }
                    Err(reason) => fail(v, reason),
                },
                Target::ExternalId => {
                    if v.len() > 256 || v.chars().any(char::is_control) {
                        fail(v, "must be 1 to 256 bytes of printable characters".into());
                    } else {
                        row.external_id = Some(v.to_string());
                    }
                }
                Target::TimeZone => match TimeZone::parse(v) {
                    Ok(t) => row.time_zone = Some(t.as_str().to_string()),
                    Err(reason) => fail(v, reason.into()),
                },
                Target::Locale => match Locale::parse(v) {
                    Ok(l) => row.locale = Some(l.as_str().to_string()),
                    Err(reason) => fail(v, reason.into()),
                },
                Target::Attribute(name) => {
                    row.attributes.insert(name.clone(), typed_value(v));
                }
                Target::Ignore => {}
            }
        }
        match email {
            Some(email) if errors.is_empty() => Record::Row(ContactRow {
                line,
                email,
                first_name: row.first_name,
                last_name: row.last_name,
                external_id: row.external_id,
                time_zone: row.time_zone,
                locale: row.locale,
                attributes: row.attributes,
            }),
            _ => Record::Failed(errors),
        }
    }
}

/// The fields of a row while its cells are read.
struct RowFields {
    first_name: Option<String>,
    last_name: Option<String>,
    external_id: Option<String>,
    time_zone: Option<String>,
    locale: Option<String>,
    attributes: Map<String, Json>,
}

/// A cell as a JSON value: `true`/`false` are booleans, plain decimal numbers are
/// numbers (not ones with a leading zero or a `+`, nor integers of more than 15
/// digits: zip codes, phone numbers and ids stay text), anything else is text.
pub fn typed_value(v: &str) -> Json {
    if v.eq_ignore_ascii_case("true") {
        return Json::Bool(true);
    }
    if v.eq_ignore_ascii_case("false") {
        return Json::Bool(false);
    }
    let digits = v.strip_prefix('-').unwrap_or(v);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let int_ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && (int == "0" || !int.starts_with('0'))
        && int.len() <= 15;
    let frac_ok = frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    if int_ok && frac_ok {
        if frac.is_none()
            && let Ok(n) = v.parse::<i64>()
        {
            return Json::from(n);
        }
        if let Some(n) = v.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
            return Json::Number(n);
        }
    }
    Json::String(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(file: &[u8], enc: &str) -> Result<(Format, Vec<Record>), FileError> {
        let (format, headers, mut rows) = open(file, None, enc, 200)?;
        let cols = resolve_columns(&headers, &HashMap::new())?;
        rows.set_columns(cols);
        let mut out = vec![];
        while let Some(r) = rows.next_record()? {
            out.push(r);
        }
        Ok((format, out))
    }

    fn emails_and_lines(recs: &[Record]) -> Vec<(u64, String)> {
        recs.iter()
            .map(|r| match r {
                Record::Row(r) => (r.line, r.email.as_str().to_string()),
                Record::Failed(e) => (e[0].line, format!("ERR {}", e[0].reason)),
            })
            .collect()
    }

    #[test]
    fn bom_crlf_semicolon_and_quoted_newlines_keep_first_line_numbers() {
        let file = b"\xEF\xBB\xBFEmail;Name\r\na@x.com;\"Ann\r\nMarie\"\r\n\r\nb@x.com;Bob\r\n";
        let (format, recs) = read_all(file, "utf-8").unwrap();
        assert_eq!(format.delimiter, b';');
        assert_eq!(format.header_offset, 3);
        assert_eq!(
            emails_and_lines(&recs),
            vec![(2, "a@x.com".into()), (5, "b@x.com".into())]
        );
        let Record::Row(a) = &recs[0] else { panic!() };
        assert_eq!(a.attributes["Name"], Json::String("Ann\r\nMarie".into()));
    }

    #[test]
    fn tabs_are_sniffed_and_values_typed() {
        let file = b"e-mail\tseats\tvip\tzip\tphone\nA@X.com\t12\ttrue\t01234\t+3412\n";
        let (format, recs) = read_all(file, "utf-8").unwrap();
        assert_eq!(format.delimiter, b'\t');
        let Record::Row(r) = &recs[0] else { panic!() };
        assert_eq!(r.email.as_str(), "a@x.com");
        assert_eq!(r.attributes["seats"], Json::from(12));
        assert_eq!(r.attributes["vip"], Json::Bool(true));
        assert_eq!(r.attributes["zip"], Json::String("01234".into()));
        assert_eq!(r.attributes["phone"], Json::String("+3412".into()));
    }

    #[test]
    fn latin1_decodes_when_declared_and_fails_per_line_otherwise() {
        let file = b"email,first_name\nj@x.com,Jos\xE9\nk@x.com,Kim\n";
        let (_, recs) = read_all(file, "UTF-8").unwrap();
        assert!(
            matches!(&recs[0], Record::Failed(e) if e[0].line == 2 && e[0].column == "first_name")
        );
        assert!(matches!(&recs[1], Record::Row(r) if r.line == 3));
        let enc = parse_encoding("latin1").unwrap();
        let (_, recs) = read_all(file, &enc).unwrap();
        let Record::Row(r) = &recs[0] else { panic!() };
        assert_eq!(r.first_name.as_deref(), Some("José"));
    }

    #[test]
    fn a_reader_reopened_at_an_offset_continues_with_the_same_lines() {
        let file = b"email,n\na@x.com,1\n\n\"b@x.com\",\"2\n2\"\nc@x.com,3\nd@x.com,4\n";
        let (format, headers, mut rows) = open(&file[..], None, "UTF-8", 200).unwrap();
        let cols = resolve_columns(&headers, &HashMap::new()).unwrap();
        rows.set_columns(cols.clone());
        rows.next_record().unwrap();
        rows.next_record().unwrap();
        let (offset, line) = (rows.offset(), rows.line());
        let rest: Vec<Record> = std::iter::from_fn(|| rows.next_record().unwrap()).collect();
        let mut again = Rows::new(&file[offset as usize..], &format, offset, line, cols, 200);
        let rest2: Vec<Record> = std::iter::from_fn(|| again.next_record().unwrap()).collect();
        assert_eq!(rest, rest2);
        assert_eq!(
            emails_and_lines(&rest2),
            vec![(6, "c@x.com".into()), (7, "d@x.com".into())]
        );
    }

    #[test]
    fn long_rows_and_extra_fields_fail_alone() {
        let long = "x".repeat(300);
        let file =
            format!("email,name,,\na@x.com,A,,\nb@x.com,{long}\nc@x.com,C,,,extra\nd@x.com,D\n");
        let (_, recs) = read_all(file.as_bytes(), "UTF-8").unwrap();
        let got = emails_and_lines(&recs);
        assert_eq!(got[0], (2, "a@x.com".into()));
        assert_eq!(got[1], (3, "ERR the row is longer than 200 bytes".into()));
        assert_eq!(
            got[2],
            (4, "ERR the row has 5 fields; the header has 4".into())
        );
        assert_eq!(got[3], (5, "d@x.com".into()));
    }

    #[test]
    fn whole_file_errors() {
        assert_eq!(read_all(b"", "UTF-8").unwrap_err(), FileError::Empty);
        assert_eq!(
            read_all(b"\xEF\xBB\xBF\r\n", "UTF-8").unwrap_err(),
            FileError::Empty
        );
        assert_eq!(
            read_all(b"name,city\nAnn,Rome\n", "UTF-8").unwrap_err(),
            FileError::NoEmailColumn
        );
        let (_, recs) = read_all(b"Email Address\n", "UTF-8").unwrap();
        assert!(recs.is_empty());
    }

    #[test]
    fn mapping_overrides_detection() {
        let headers = vec!["Correo".to_string(), "Nombre".to_string()];
        let mapping = HashMap::from([
            ("correo".to_string(), "email".to_string()),
            ("Nombre".to_string(), "first_name".to_string()),
        ]);
        let cols = resolve_columns(&headers, &mapping).unwrap();
        assert_eq!(cols[0].target, "email");
        assert_eq!(cols[1].target, "first_name");
        let bad = HashMap::from([("Missing".to_string(), "email".to_string())]);
        assert_eq!(
            resolve_columns(&headers, &bad).unwrap_err(),
            FileError::UnknownColumn("Missing".into())
        );
    }

    #[test]
    fn numbers_are_typed_conservatively() {
        assert_eq!(typed_value("42"), Json::from(42));
        assert_eq!(typed_value("-3.5"), Json::from(-3.5));
        assert_eq!(typed_value("0.5"), Json::from(0.5));
        assert_eq!(typed_value("007"), Json::from("007"));
        assert_eq!(typed_value("1e5"), Json::from("1e5"));
        assert_eq!(
            typed_value("1234567890123456"),
            Json::from("1234567890123456")
        );
        assert_eq!(typed_value("FALSE"), Json::Bool(false));
    }
}
