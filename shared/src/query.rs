//! The `where` language: a request's filter typed as one line of text, such as
//! `cell.cell_type == 'B cell' and bundle.organ in ['lung', 'blood']`.
//!
//! [`parse_where`] turns the text into the JSON filter tree a request's `filter` holds,
//! and nothing more: names are passed through as written (a bare name is qualified by
//! the caller's resolver), and types, operators per field and the tree's size are
//! checked by the filter module afterwards, so the text and the tree share one code path
//! after parsing. The grammar, the semantics and the limits are in `docs/QUERY.md`.
//!
//! The lexer and the recursive-descent parser are written by hand (decision 0054): the
//! grammar is a dozen rules, and a hand-written parser gives the error messages, the
//! positions and the nesting bound the API promises without a dependency.

use std::fmt;

use serde_json::{Map, Number, Value};

/// Longest text accepted, in bytes. It also bounds every allocation of the parser: the
/// tokens, the lists and the tree are each at most a few times the text.
pub const MAX_TEXT_BYTES: usize = 65_536;
/// Deepest nesting of parentheses and `not` accepted, so hostile input cannot overflow
/// the stack of the recursive descent.
pub const MAX_NESTING: usize = 32;
/// An error shows at most this many characters of the text around its position.
const EXCERPT_CHARS: usize = 72;
/// Of those, about this many come before the position.
const EXCERPT_BEFORE: usize = 48;

/// Resolves a bare field name (`cell_type`) to its qualified name (`cell.cell_type`), or
/// says why it cannot (unknown, or present at both levels).
pub type Resolver<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// A `where` text that does not parse: what is wrong, and where.
///
/// Its [`Display`](fmt::Display) is three lines: the message with the position, the
/// text (cut around the position when long, control characters shown as spaces) and a
/// caret under the position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhereError {
    /// The offset of the offending character in the text, in characters (not bytes),
    /// from 0; the text's length for an error at its end.
    pub position: usize,
    /// What is wrong, for a person, in one line.
    pub message: String,
    /// The part of the text shown under the message.
    excerpt: String,
    /// The column of the caret under `excerpt`, in characters.
    caret: usize,
}

impl WhereError {
    fn new(text: &str, position: usize, message: String) -> Self {
        let total = text.chars().count();
        let position = position.min(total);
        let (start, end) = if total <= EXCERPT_CHARS {
            (0, total)
        } else {
            let start = position
                .saturating_sub(EXCERPT_BEFORE)
                .min(total - EXCERPT_CHARS);
            (start, start + EXCERPT_CHARS)
        };
        let mut excerpt = String::new();
        if start > 0 {
            excerpt.push('…');
        }
        // One column per character keeps the caret under its character: a tab or a
        // newline in the text would move it.
        excerpt.extend(
            text.chars()
                .skip(start)
                .take(end - start)
                .map(|c| if c.is_control() { ' ' } else { c }),
        );
        if end < total {
            excerpt.push('…');
        }
        let caret = position - start + usize::from(start > 0);
        WhereError {
            position,
            message,
            excerpt,
            caret,
        }
    }
}

impl fmt::Display for WhereError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "where: {} at position {}\n  {}\n  {}^",
            self.message,
            self.position,
            self.excerpt,
            " ".repeat(self.caret)
        )
    }
}

impl std::error::Error for WhereError {}

/// Parses a `where` text into the JSON filter tree that `Filter::parse` validates.
///
/// `resolve` qualifies each bare name (`cell_type` → `cell.cell_type`); its error is
/// reported at the name's position. Qualified names (`cell.x`, `bundle.x`) are passed
/// through as written. The tree's nodes:
/// - `{"op":"and"|"or","value":[..]}` (a chain `a and b and c` is one node),
///   `{"op":"not","value":[child]}`;
/// - `{"op":"="|"!="|"<"|"<="|">"|">=","field":F,"value":V}`, V a string, a number (an
///   integer when written without `.` or exponent and within i64) or a boolean; a bare
///   field used as a condition is `{"op":"=","field":F,"value":true}`;
/// - `{"op":"in"|"not in","field":F,"value":[V,..]}`;
/// - `{"op":"is null"|"is not null","field":F}`.
pub fn parse_where(text: &str, resolve: Resolver<'_>) -> Result<Value, WhereError> {
    if text.len() > MAX_TEXT_BYTES {
        let within = text
            .char_indices()
            .take_while(|(at, c)| at + c.len_utf8() <= MAX_TEXT_BYTES)
            .count();
        return Err(WhereError::new(
            text,
            within,
            format!(
                "the text is {} bytes, over the limit of {MAX_TEXT_BYTES}; it is cut here",
                text.len()
            ),
        ));
    }
    let chars: Vec<char> = text.chars().collect();
    let tokens = Lexer {
        text,
        chars: &chars,
        at: 0,
    }
    .tokens()?;
    let mut parser = Parser {
        text,
        chars: &chars,
        tokens,
        at: 0,
        depth: 0,
        resolve,
    };
    if parser.peek().kind == Kind::End {
        return Err(parser.error(
            0,
            "the text is empty; write a condition such as cell.n_genes >= 200".to_string(),
        ));
    }
    let tree = parser.or()?;
    let next = parser.peek();
    if next.kind != Kind::End {
        return Err(parser.error(
            next.start,
            format!(
                "expected 'and', 'or' or the end of the text, found {}",
                parser.found(next)
            ),
        ));
    }
    Ok(tree)
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// A bare name or a keyword; keywords are told apart by the parser, in any case.
    Word(String),
    /// `cell.name` or `bundle.name`, the level written in lower case.
    Field(String),
    Str(String),
    Num(Number),
    /// A comparison, as it goes into the tree (`==` is `=`).
    Cmp(&'static str),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    /// Character offsets of the token in the text, `end` exclusive.
    start: usize,
    end: usize,
}

const KEYWORDS: [&str; 8] = ["and", "or", "not", "in", "is", "null", "true", "false"];

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

struct Lexer<'a> {
    text: &'a str,
    chars: &'a [char],
    at: usize,
}

impl Lexer<'_> {
    fn error(&self, position: usize, message: String) -> WhereError {
        WhereError::new(self.text, position, message)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn tokens(mut self) -> Result<Vec<Token>, WhereError> {
        let mut tokens = Vec::new();
        while let Some(c) = self.peek() {
            let start = self.at;
            if c.is_whitespace() {
                self.at += 1;
                continue;
            }
            let kind = match c {
                '(' | ')' | '[' | ']' | ',' => {
                    self.at += 1;
                    match c {
                        '(' => Kind::LParen,
                        ')' => Kind::RParen,
                        '[' => Kind::LBracket,
                        ']' => Kind::RBracket,
                        _ => Kind::Comma,
                    }
                }
                '=' | '!' | '<' | '>' => self.comparison(c)?,
                '\'' | '"' => Kind::Str(self.string(c)?),
                '-' | '0'..='9' => Kind::Num(self.number()?),
                c if is_name_start(c) => self.name()?,
                c => {
                    return Err(self.error(
                        start,
                        format!(
                            "unexpected character {c:?}; names are ASCII letters, digits and \
                             '_', and strings are quoted"
                        ),
                    ));
                }
            };
            tokens.push(Token {
                kind,
                start,
                end: self.at,
            });
        }
        tokens.push(Token {
            kind: Kind::End,
            start: self.at,
            end: self.at,
        });
        Ok(tokens)
    }

    fn comparison(&mut self, first: char) -> Result<Kind, WhereError> {
        let start = self.at;
        self.at += 1;
        let equals = self.peek() == Some('=');
        if equals {
            self.at += 1;
        }
        Ok(Kind::Cmp(match (first, equals) {
            ('=', _) => "=",
            ('!', true) => "!=",
            ('<', true) => "<=",
            ('<', false) => "<",
            ('>', true) => ">=",
            ('>', false) => ">",
            _ => {
                return Err(self.error(
                    start,
                    "'!' stands only in '!='; negate a condition with 'not'".to_string(),
                ));
            }
        }))
    }

    /// A quoted string, from its opening quote to its closing one, escapes decoded.
    fn string(&mut self, quote: char) -> Result<String, WhereError> {
        let open = self.at;
        self.at += 1;
        let mut value = String::new();
        let unterminated = |lexer: &Self| {
            lexer.error(
                open,
                format!("unterminated string: the {quote} opened here is never closed"),
            )
        };
        loop {
            let Some(c) = self.peek() else {
                return Err(unterminated(self));
            };
            self.at += 1;
            if c == quote {
                return Ok(value);
            }
            if c != '\\' {
                value.push(c);
                continue;
            }
            let escape = self.at - 1;
            let Some(e) = self.peek() else {
                return Err(unterminated(self));
            };
            self.at += 1;
            value.push(match e {
                '\\' | '\'' | '"' => e,
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '0' => '\0',
                'u' => self.unicode(escape)?,
                _ => {
                    return Err(self.error(
                        escape,
                        format!(
                            "unknown escape '\\{e}' in a string; the escapes are \\\\ \\' \\\" \
                             \\n \\t \\r \\0 and \\u{{hex}}"
                        ),
                    ));
                }
            });
        }
    }

    /// The rest of `\u{hex}` after the `u`: 1 to 6 hex digits naming a Unicode scalar
    /// value (not a surrogate).
    fn unicode(&mut self, escape: usize) -> Result<char, WhereError> {
        let bad = |lexer: &Self| {
            lexer.error(
                escape,
                "bad unicode escape: write \\u{hex} with 1 to 6 hex digits naming a Unicode \
                 character (not a surrogate)"
                    .to_string(),
            )
        };
        if self.peek() != Some('{') {
            return Err(bad(self));
        }
        self.at += 1;
        let mut code: u32 = 0;
        let mut digits = 0;
        while let Some(d) = self.peek().and_then(|c| c.to_digit(16)) {
            digits += 1;
            if digits > 6 {
                return Err(bad(self));
            }
            code = code * 16 + d;
            self.at += 1;
        }
        if digits == 0 || self.peek() != Some('}') {
            return Err(bad(self));
        }
        self.at += 1;
        char::from_u32(code).ok_or_else(|| bad(self))
    }

    /// `-`? digits (`.` digits)? ([eE] [+-]? digits)?: an i64 when it has neither
    /// fraction nor exponent and fits, else a finite f64.
    fn number(&mut self) -> Result<Number, WhereError> {
        let start = self.at;
        let malformed = |lexer: &Self, at: usize| {
            let mut end = at;
            while lexer
                .chars
                .get(end)
                .is_some_and(|&c| is_name_char(c) || c == '.')
            {
                end += 1;
            }
            let written: String = lexer.chars[start..end.max(at + 1).min(lexer.chars.len())]
                .iter()
                .collect();
            lexer.error(
                at,
                format!(
                    "malformed number '{}': write -12, 2.5 or 1e-3",
                    crate::text::clip(&written)
                ),
            )
        };
        if self.peek() == Some('-') {
            self.at += 1;
        }
        let mut integer = true;
        if !self.digits() {
            return Err(malformed(self, start));
        }
        if self.peek() == Some('.') {
            integer = false;
            self.at += 1;
            if !self.digits() {
                return Err(malformed(self, start));
            }
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            integer = false;
            self.at += 1;
            if matches!(self.peek(), Some('+' | '-')) {
                self.at += 1;
            }
            if !self.digits() {
                return Err(malformed(self, start));
            }
        }
        // `12abc` or `1.2.3` is one mistake, not a number then a name.
        if self.peek().is_some_and(|c| is_name_char(c) || c == '.') {
            return Err(malformed(self, start));
        }
        let written: String = self.chars[start..self.at].iter().collect();
        if integer && let Ok(n) = written.parse::<i64>() {
            return Ok(Number::from(n));
        }
        written
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .ok_or_else(|| {
                self.error(
                    start,
                    format!(
                        "the number {} is out of range: a number must be a finite double",
                        crate::text::clip(&written)
                    ),
                )
            })
    }

    /// Skips ASCII digits; whether there was at least one.
    fn digits(&mut self) -> bool {
        let from = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        self.at > from
    }

    /// A word (a keyword or a bare name), or `cell.name` / `bundle.name`.
    fn name(&mut self) -> Result<Kind, WhereError> {
        let start = self.at;
        while self.peek().is_some_and(is_name_char) {
            self.at += 1;
        }
        let word: String = self.chars[start..self.at].iter().collect();
        if self.peek() != Some('.') {
            return Ok(Kind::Word(word));
        }
        let level = if word.eq_ignore_ascii_case("cell") {
            "cell"
        } else if word.eq_ignore_ascii_case("bundle") {
            "bundle"
        } else {
            return Err(self.error(
                start,
                format!(
                    "unknown level '{}': a field is cell.NAME, bundle.NAME or a bare NAME",
                    crate::text::clip(&word)
                ),
            ));
        };
        self.at += 1;
        let name_start = self.at;
        if !self.peek().is_some_and(is_name_start) {
            return Err(self.error(
                name_start,
                format!("expected a field name after '{word}.' (a letter or '_')"),
            ));
        }
        while self.peek().is_some_and(is_name_char) {
            self.at += 1;
        }
        let name: String = self.chars[name_start..self.at].iter().collect();
        Ok(Kind::Field(format!("{level}.{name}")))
    }
}

struct Parser<'a> {
    text: &'a str,
    chars: &'a [char],
    tokens: Vec<Token>,
    at: usize,
    /// Parentheses and `not`s open around the current token.
    depth: usize,
    resolve: Resolver<'a>,
}

impl Parser<'_> {
    fn error(&self, position: usize, message: String) -> WhereError {
        WhereError::new(self.text, position, message)
    }

    fn peek(&self) -> &Token {
        // The lexer always ends the tokens with `End`, which is never consumed.
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let token = self.peek().clone();
        if token.kind != Kind::End {
            self.at += 1;
        }
        token
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(&self.peek().kind, Kind::Word(w) if w.eq_ignore_ascii_case(keyword))
    }

    /// The token as the user wrote it, for "found ..." in a message.
    fn found(&self, token: &Token) -> String {
        if token.kind == Kind::End {
            return "the end of the text".to_string();
        }
        let written: String = self.chars[token.start..token.end].iter().collect();
        format!("'{}'", crate::text::clip(&written))
    }

    fn enter(&mut self, position: usize) -> Result<(), WhereError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error(
                position,
                format!("nesting deeper than {MAX_NESTING} (parentheses and 'not' count)"),
            ));
        }
        Ok(())
    }

    /// or = and { "or" and }
    fn or(&mut self) -> Result<Value, WhereError> {
        let mut items = vec![self.and()?];
        while self.is_keyword("or") {
            self.bump();
            items.push(self.and()?);
        }
        Ok(logic("or", items))
    }

    /// and = unary { "and" unary }
    fn and(&mut self) -> Result<Value, WhereError> {
        let mut items = vec![self.unary()?];
        while self.is_keyword("and") {
            self.bump();
            items.push(self.unary()?);
        }
        Ok(logic("and", items))
    }

    /// unary = "not" unary | "(" or ")" | condition
    fn unary(&mut self) -> Result<Value, WhereError> {
        let token = self.peek().clone();
        if self.is_keyword("not") {
            self.bump();
            self.enter(token.start)?;
            let operand = self.unary()?;
            self.depth -= 1;
            let mut node = Map::new();
            node.insert("op".into(), "not".into());
            node.insert("value".into(), Value::Array(vec![operand]));
            return Ok(Value::Object(node));
        }
        match &token.kind {
            Kind::LParen => {
                self.bump();
                self.enter(token.start)?;
                let inner = self.or()?;
                let close = self.peek().clone();
                if close.kind != Kind::RParen {
                    return Err(self.error(
                        close.start,
                        format!(
                            "expected ')' to close the '(' at position {}, found {}",
                            token.start,
                            self.found(&close)
                        ),
                    ));
                }
                self.bump();
                self.depth -= 1;
                Ok(inner)
            }
            Kind::Field(field) => {
                self.bump();
                self.condition(field.clone())
            }
            Kind::Word(word) if !KEYWORDS.iter().any(|k| word.eq_ignore_ascii_case(k)) => {
                self.bump();
                let field = (self.resolve)(word).map_err(|m| self.error(token.start, m))?;
                self.condition(field)
            }
            _ => Err(self.error(
                token.start,
                format!(
                    "expected a condition (a field, 'not' or '('), found {}",
                    self.found(&token)
                ),
            )),
        }
    }

    /// What follows a field: a comparison, `in`, `not in`, `is [not] null`, or nothing
    /// (the field is a boolean, true).
    fn condition(&mut self, field: String) -> Result<Value, WhereError> {
        let token = self.peek().clone();
        let mut node = Map::new();
        let (op, value) =
            match &token.kind {
                Kind::Cmp(op) => {
                    self.bump();
                    (*op, Some(self.value(&field, &token)?))
                }
                Kind::Word(w) if w.eq_ignore_ascii_case("in") => {
                    self.bump();
                    ("in", Some(self.list(&field, &token)?))
                }
                Kind::Word(w) if w.eq_ignore_ascii_case("not") => {
                    self.bump();
                    if !self.is_keyword("in") {
                        let next = self.peek();
                        return Err(self.error(
                        next.start,
                        format!(
                            "expected 'in' after '{field} not', found {}; to negate a condition \
                             write 'not' before it",
                            self.found(next)
                        ),
                    ));
                    }
                    let in_token = self.bump();
                    ("not in", Some(self.list(&field, &in_token)?))
                }
                Kind::Word(w) if w.eq_ignore_ascii_case("is") => {
                    self.bump();
                    let negated = self.is_keyword("not");
                    if negated {
                        self.bump();
                    }
                    if !self.is_keyword("null") {
                        let next = self.peek();
                        return Err(self.error(
                            next.start,
                            format!(
                                "expected 'null' after '{field} is{}', found {}",
                                if negated { " not" } else { "" },
                                self.found(next)
                            ),
                        ));
                    }
                    self.bump();
                    (if negated { "is not null" } else { "is null" }, None)
                }
                Kind::Word(w) if w.eq_ignore_ascii_case("and") || w.eq_ignore_ascii_case("or") => {
                    ("=", Some(Value::Bool(true)))
                }
                Kind::RParen | Kind::End => ("=", Some(Value::Bool(true))),
                _ => return Err(self.error(
                    token.start,
                    format!(
                        "expected an operator after '{field}' (==, !=, <, <=, >, >=, in, not in, \
                         is null, is not null), 'and', 'or' or ')', found {}",
                        self.found(&token)
                    ),
                )),
            };
        node.insert("op".into(), op.into());
        node.insert("field".into(), field.into());
        if let Some(value) = value {
            node.insert("value".into(), value);
        }
        Ok(Value::Object(node))
    }

    /// A literal after a comparison, or in a list (`after` is the token before it).
    fn value(&mut self, field: &str, after: &Token) -> Result<Value, WhereError> {
        let token = self.bump();
        match &token.kind {
            Kind::Str(s) => Ok(Value::String(s.clone())),
            Kind::Num(n) => Ok(Value::Number(n.clone())),
            Kind::Word(w) if w.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Kind::Word(w) if w.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            Kind::Word(w) if w.eq_ignore_ascii_case("null") => {
                let message = match after.kind {
                    Kind::Cmp("=") => {
                        format!("a comparison with null is never true; write '{field} is null'")
                    }
                    Kind::Cmp("!=") => {
                        format!("a comparison with null is never true; write '{field} is not null'")
                    }
                    Kind::Cmp(_) => format!(
                        "null has no order and a comparison with it is never true; test it \
                         with '{field} is null'"
                    ),
                    _ => format!(
                        "null in a list never matches; write '{field} is null' beside the list"
                    ),
                };
                Err(self.error(token.start, message))
            }
            _ => {
                let hint = match &token.kind {
                    Kind::Word(w) if !KEYWORDS.iter().any(|k| w.eq_ignore_ascii_case(k)) => {
                        format!(" (a string is quoted: '{}')", crate::text::clip(w))
                    }
                    _ => String::new(),
                };
                Err(self.error(
                    token.start,
                    format!(
                        "expected a value (a quoted string, a number, true or false) after {}, \
                         found {}{hint}",
                        self.found(after),
                        self.found(&token)
                    ),
                ))
            }
        }
    }

    /// list = "[" value { "," value } [ "," ] "]"
    fn list(&mut self, field: &str, after: &Token) -> Result<Value, WhereError> {
        let open = self.peek().clone();
        if open.kind != Kind::LBracket {
            return Err(self.error(
                open.start,
                format!(
                    "expected a list such as ['a', 'b'] after {}, found {}",
                    self.found(after),
                    self.found(&open)
                ),
            ));
        }
        self.bump();
        if self.peek().kind == Kind::RBracket {
            return Err(self.error(
                self.peek().start,
                "a list needs at least one value".to_string(),
            ));
        }
        let mut values = Vec::new();
        let mut before = open.clone();
        loop {
            values.push(self.value(field, &before)?);
            let next = self.peek().clone();
            match next.kind {
                Kind::Comma => {
                    self.bump();
                    if self.peek().kind == Kind::RBracket {
                        self.bump();
                        break;
                    }
                    before = next;
                }
                Kind::RBracket => {
                    self.bump();
                    break;
                }
                _ => {
                    return Err(self.error(
                        next.start,
                        format!(
                            "expected ',' or ']' to close the list opened at position {}, \
                             found {}",
                            open.start,
                            self.found(&next)
                        ),
                    ));
                }
            }
        }
        Ok(Value::Array(values))
    }
}

/// One `and`/`or` node over `items`, or the item itself when there is one.
fn logic(op: &str, mut items: Vec<Value>) -> Value {
    if items.len() == 1 {
        return items.pop().unwrap_or(Value::Null);
    }
    let mut node = Map::new();
    node.insert("op".into(), op.into());
    node.insert("value".into(), Value::Array(items));
    Value::Object(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn resolver(name: &str) -> Result<String, String> {
        match name {
            "cell_type" => Err(
                "cell_type is both bundle.cell_type and cell.cell_type; write one of them"
                    .to_string(),
            ),
            "organ" => Ok("bundle.organ".to_string()),
            "n_genes" | "is_doublet" => Ok(format!("cell.{name}")),
            _ => Err(format!("unknown field '{name}'")),
        }
    }

    fn parse(text: &str) -> Result<Value, WhereError> {
        parse_where(text, &resolver)
    }

    fn ok(text: &str) -> Value {
        parse(text).unwrap_or_else(|e| panic!("{text:?} should parse:\n{e}"))
    }

    fn err(text: &str) -> WhereError {
        match parse(text) {
            Ok(v) => panic!("{text:?} should not parse, gave {v}"),
            Err(e) => e,
        }
    }

    fn cmp(op: &str, field: &str, value: Value) -> Value {
        json!({"op": op, "field": field, "value": value})
    }

    #[test]
    fn the_issue_example() {
        let tree = ok(
            "cell.cell_type == 'B cell' and bundle.organ in ['lung', 'blood'] and \
                       cell.n_genes >= 200 and not cell.is_doublet",
        );
        assert_eq!(
            tree,
            json!({"op": "and", "value": [
                {"op": "=", "field": "cell.cell_type", "value": "B cell"},
                {"op": "in", "field": "bundle.organ", "value": ["lung", "blood"]},
                {"op": ">=", "field": "cell.n_genes", "value": 200},
                {"op": "not", "value": [{"op": "=", "field": "cell.is_doublet", "value": true}]},
            ]})
        );
    }

    #[test]
    fn precedence_not_and_or() {
        let a = cmp("=", "cell.a", json!(1));
        let b = cmp("=", "cell.b", json!(2));
        let c = cmp("=", "cell.c", json!(3));
        let not = |v: &Value| json!({"op": "not", "value": [v]});
        assert_eq!(
            ok("cell.a == 1 or cell.b == 2 and cell.c == 3"),
            json!({"op": "or", "value": [a, {"op": "and", "value": [b, c]}]})
        );
        assert_eq!(
            ok("cell.a == 1 and cell.b == 2 or cell.c == 3"),
            json!({"op": "or", "value": [{"op": "and", "value": [a, b]}, c]})
        );
        assert_eq!(
            ok("not cell.a == 1 and cell.b == 2"),
            json!({"op": "and", "value": [not(&a), b]})
        );
        assert_eq!(
            ok("not (cell.a == 1 or cell.b == 2)"),
            not(&json!({"op": "or", "value": [a, b]}))
        );
        assert_eq!(
            ok("(cell.a == 1 or cell.b == 2) and cell.c == 3"),
            json!({"op": "and", "value": [{"op": "or", "value": [a, b]}, c]})
        );
        assert_eq!(ok("not not cell.a == 1"), not(&not(&a)));
        // A chain is one node; parentheses keep their own node.
        assert_eq!(
            ok("cell.a == 1 and cell.b == 2 and cell.c == 3"),
            json!({"op": "and", "value": [a, b, c]})
        );
        assert_eq!(
            ok("cell.a == 1 and (cell.b == 2 and cell.c == 3)"),
            json!({"op": "and", "value": [a, {"op": "and", "value": [b, c]}]})
        );
        assert_eq!(ok("((cell.a == 1))"), a);
    }

    #[test]
    fn operators() {
        for (written, op) in [
            ("==", "="),
            ("=", "="),
            ("!=", "!="),
            ("<", "<"),
            ("<=", "<="),
            (">", ">"),
            (">=", ">="),
        ] {
            assert_eq!(
                ok(&format!("cell.x {written} 1")),
                cmp(op, "cell.x", json!(1))
            );
            assert_eq!(
                ok(&format!("cell.x{written}1")),
                cmp(op, "cell.x", json!(1))
            );
        }
        assert_eq!(
            ok("bundle.organ not in ['lung']"),
            json!({"op": "not in", "field": "bundle.organ", "value": ["lung"]})
        );
        // `not` before the condition is a plain negation around `in`.
        assert_eq!(
            ok("not bundle.organ in ['lung']"),
            json!({"op": "not", "value": [
                {"op": "in", "field": "bundle.organ", "value": ["lung"]}
            ]})
        );
        assert_eq!(
            ok("cell.x is null"),
            json!({"op": "is null", "field": "cell.x"})
        );
        assert_eq!(
            ok("cell.x is not null"),
            json!({"op": "is not null", "field": "cell.x"})
        );
        assert_eq!(
            ok("cell.x in [1, 2.5, true, 'a',]"),
            json!({"op": "in", "field": "cell.x", "value": [1, 2.5, true, "a"]})
        );
    }

    #[test]
    fn a_bare_field_is_a_boolean_condition() {
        let t = cmp("=", "cell.is_doublet", json!(true));
        assert_eq!(ok("cell.is_doublet"), t);
        assert_eq!(ok("(cell.is_doublet)"), t);
        assert_eq!(
            ok("not cell.is_doublet"),
            json!({"op": "not", "value": [t]})
        );
        assert_eq!(
            ok("cell.is_doublet or bundle.x and cell.y"),
            json!({"op": "or", "value": [t, {"op": "and", "value": [
                cmp("=", "bundle.x", json!(true)), cmp("=", "cell.y", json!(true))
            ]}]})
        );
        assert_eq!(ok("is_doublet"), t);
    }

    #[test]
    fn escapes() {
        let value = |text: &str| ok(&format!("cell.x == {text}"))["value"].clone();
        assert_eq!(value(r"'a\\b'"), json!("a\\b"));
        assert_eq!(value(r"'it\'s'"), json!("it's"));
        assert_eq!(value(r#""say \"hi\"""#), json!("say \"hi\""));
        assert_eq!(value(r#""it's""#), json!("it's"));
        assert_eq!(value(r#"'"'"#), json!("\""));
        assert_eq!(value(r"'\n\t\r\0'"), json!("\n\t\r\0"));
        assert_eq!(value(r"'\u{e9}\u{1F600}'"), json!("é😀"));
        assert_eq!(value("'naïve 細胞'"), json!("naïve 細胞"));
        assert_eq!(value("''"), json!(""));
        for bad in [
            r"'\u{D800}'",
            r"'\u{110000}'",
            r"'\u{}'",
            r"'\u00e9'",
            r"'\u{1234567}'",
        ] {
            let e = err(&format!("cell.x == {bad}"));
            assert!(e.message.contains("unicode escape"), "{bad}: {e}");
            assert_eq!(e.position, 11, "{bad}");
        }
    }

    #[test]
    fn numbers_integer_or_float() {
        let value = |text: &str| ok(&format!("cell.x == {text}"))["value"].clone();
        assert!(value("200").is_i64());
        assert_eq!(value("200"), json!(200));
        assert_eq!(value("-3"), json!(-3));
        assert_eq!(value("-0"), json!(0));
        assert_eq!(value("9223372036854775807"), json!(i64::MAX));
        assert_eq!(value("-9223372036854775808"), json!(i64::MIN));
        // Past i64: a double.
        assert!(value("9223372036854775808").is_f64());
        assert!(value("2.0").is_f64());
        assert_eq!(value("2.5"), json!(2.5));
        assert_eq!(value("1e-3"), json!(0.001));
        assert_eq!(value("1E3"), json!(1000.0));
        assert!(value("1e3").is_f64());
        assert_eq!(value("-1.5e+2"), json!(-150.0));
        for bad in ["1e999", "-1e400"] {
            assert!(
                err(&format!("cell.x == {bad}"))
                    .message
                    .contains("out of range")
            );
        }
        for bad in ["1.", "1.2.3", "12abc", "-", "1e", "--1", "1e+"] {
            let e = err(&format!("cell.x == {bad}"));
            assert!(e.message.contains("malformed number"), "{bad}: {e}");
        }
        assert!(
            err("cell.x == .5")
                .message
                .contains("unexpected character '.'")
        );
    }

    #[test]
    fn keywords_in_any_case() {
        assert_eq!(
            ok(
                "NOT cell.a IS NULL AND cell.b Is Not Null OR cell.c NOT IN [TRUE, False] \
                aNd cell.d In [1]"
            ),
            ok(
                "not cell.a is null and cell.b is not null or cell.c not in [true, false] \
                and cell.d in [1]"
            )
        );
        // The level is a keyword too; the name after it is passed through as written.
        assert_eq!(
            ok("CELL.Cell_Type == 'x'"),
            cmp("=", "cell.Cell_Type", json!("x"))
        );
        assert_eq!(ok("Bundle.in == 'x'"), cmp("=", "bundle.in", json!("x")));
    }

    /// The error at `position`, with the excerpt and caret the display promises.
    fn assert_error(text: &str, position: usize, words: &str) {
        let e = err(text);
        assert_eq!(e.position, position, "{text:?}: {e}");
        assert!(e.message.contains(words), "{text:?}: {e}");
        let shown = e.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 3, "{shown}");
        assert_eq!(
            lines[0],
            format!("where: {} at position {position}", e.message)
        );
        assert_eq!(lines[2].trim_end(), format!("  {}^", " ".repeat(e.caret)));
        if text.chars().count() <= EXCERPT_CHARS {
            assert_eq!(lines[1], format!("  {text}"));
            assert_eq!(e.caret, position);
        }
    }

    #[test]
    fn errors_name_the_position() {
        assert_error("cell.x == 'B cell", 10, "unterminated string");
        assert_error("cell.x == 'B cell\\", 10, "unterminated string");
        assert_error(r"cell.x == 'a\qb'", 12, r"unknown escape '\q'");
        assert_error("cell.x in ['a', 'b'", 19, "expected ',' or ']'");
        assert_error("cell.x in ['a' 'b']", 15, "list opened at position 10");
        assert_error("cell.x in []", 11, "at least one value");
        assert_error("cell.x in 'a'", 10, "expected a list");
        assert_error("cell.x ==", 9, "expected a value");
        assert_error("cell.x == and cell.y", 10, "expected a value");
        assert_error("cell.x == lung", 10, "(a string is quoted: 'lung')");
        assert_error(
            "cell.x == 1 cell.y == 2",
            12,
            "expected 'and', 'or' or the end",
        );
        assert_error("cell.x == 1)", 11, "expected 'and', 'or' or the end");
        assert_error(
            "(cell.x == 1",
            12,
            "expected ')' to close the '(' at position 0",
        );
        assert_error("cell.x == null", 10, "write 'cell.x is null'");
        assert_error("cell.x != NULL", 10, "write 'cell.x is not null'");
        assert_error("cell.x < null", 9, "null has no order");
        assert_error("cell.x in ['a', null]", 16, "null in a list");
        assert_error("cell.x is 3", 10, "expected 'null'");
        assert_error("cell.x not like 'a'", 11, "expected 'in'");
        assert_error("cell.x 5", 7, "expected an operator after 'cell.x'");
        assert_error("cell.x ! 5", 7, "'!='");
        assert_error("tissue.x == 1", 0, "unknown level 'tissue'");
        assert_error("cell. == 1", 5, "expected a field name after 'cell.'");
        assert_error("cell.x == 1 and", 15, "expected a condition");
        assert_error("and cell.x == 1", 0, "expected a condition");
        assert_error("", 0, "empty");
        assert_error("   ", 0, "empty");
        assert_error(
            "cell.x == 'é' and cell.y ~ 2",
            25,
            "unexpected character '~'",
        );
        // Positions count characters, not bytes.
        assert_error("cell.x == '細胞' and cell.y == null", 29, "is null");
    }

    #[test]
    fn a_long_text_is_cut_around_the_position() {
        let text = format!("cell.x in [{}'a', 'b'", "'v', ".repeat(100));
        let e = err(&text);
        assert_eq!(e.position, text.chars().count());
        let shown = e.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        let last: String = text
            .chars()
            .skip(text.chars().count() - EXCERPT_CHARS)
            .collect();
        assert_eq!(lines[1], format!("  …{last}"));
        assert!(lines[1].ends_with("'v', 'a', 'b'"), "{shown}");
        assert_eq!(lines[1].chars().count(), 2 + 1 + EXCERPT_CHARS);
        assert_eq!(lines[2].chars().count(), 2 + 1 + EXCERPT_CHARS + 1);
        assert!(lines[2].ends_with('^'));

        let text = format!("cell.x = 1 ~{}", " and cell.y = 2".repeat(20));
        let e = err(&text);
        assert_eq!(e.position, 11);
        let lines: Vec<String> = e.to_string().lines().map(String::from).collect();
        assert!(lines[1].starts_with("  cell.x = 1 ~ and") && lines[1].ends_with('…'));
        assert_eq!(lines[2], format!("  {}^", " ".repeat(11)));

        // Newlines and tabs are shown as spaces, so the caret stays under its character.
        let e = err("cell.x == 1\n\tand ~");
        assert_eq!(e.to_string().lines().nth(1), Some("  cell.x == 1  and ~"));
        assert_eq!(e.caret, 17);
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        for text in [
            "(".repeat(10_000),
            format!("{}cell.x == 1{}", "(".repeat(10_000), ")".repeat(10_000)),
            "not ".repeat(10_000) + "cell.x",
            "not (".repeat(10_000),
        ] {
            let e = err(&text);
            assert!(e.message.contains("nesting deeper than 32"), "{e}");
        }
        let at_limit = format!("{}cell.x{}", "(".repeat(32), ")".repeat(32));
        assert_eq!(ok(&at_limit), cmp("=", "cell.x", json!(true)));
        let e = err(&format!("{}cell.x{}", "(".repeat(33), ")".repeat(33)));
        assert_eq!(e.position, 32);
        assert!(ok(&("not ".repeat(32) + "cell.x")).is_object());
        assert!(
            err(&("not ".repeat(33) + "cell.x"))
                .message
                .contains("nesting")
        );
        // Depth is nesting, not length: a long flat chain is fine.
        let chain = vec!["(cell.x == 1)"; 1000].join(" or ");
        assert_eq!(ok(&chain)["value"].as_array().map(Vec::len), Some(1000));
    }

    #[test]
    fn text_over_the_limit_is_refused() {
        let fits = format!("cell.x == '{}'", "a".repeat(MAX_TEXT_BYTES - 12));
        assert_eq!(fits.len(), MAX_TEXT_BYTES);
        assert!(ok(&fits).is_object());
        let over = format!("cell.x == '{}'", "é".repeat(MAX_TEXT_BYTES));
        let e = err(&over);
        assert!(e.message.contains("over the limit of 65536"), "{e}");
        // The cut falls after the last character within the limit.
        assert_eq!(e.position, 11 + (MAX_TEXT_BYTES - 11) / 2);
        assert!(e.to_string().len() < 500);
    }

    #[test]
    fn bare_names_resolve_or_fail_at_their_position() {
        assert_eq!(
            ok("organ == 'lung' and n_genes > 5"),
            json!({"op": "and", "value": [
                cmp("=", "bundle.organ", json!("lung")),
                cmp(">", "cell.n_genes", json!(5)),
            ]})
        );
        assert_error(
            "organ == 'lung' and cell_type == 'B cell'",
            20,
            "cell_type is both bundle.cell_type and cell.cell_type; write one of them",
        );
        assert_error(
            "organ == 'lung' or (tissue in ['x'])",
            20,
            "unknown field 'tissue'",
        );
        // Qualified names never reach the resolver.
        assert_eq!(
            ok("cell.cell_type == 'T'"),
            cmp("=", "cell.cell_type", json!("T"))
        );
    }

    #[test]
    fn the_examples_of_query_md_parse_and_its_error_is_shown_as_written() {
        let doc = include_str!("../../docs/QUERY.md");
        let examples: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split("` |").next())
            .collect();
        assert!(examples.len() >= 5, "{examples:?}");
        let resolve = |name: &str| match name {
            "bulk_labels" => Ok(format!("cell.{name}")),
            _ => Err(format!("unknown field '{name}'")),
        };
        for text in examples {
            let tree = parse_where(text, &resolve).unwrap_or_else(|e| panic!("{e}"));
            assert!(tree["op"].is_string(), "{text}: {tree}");
        }
        let shown = doc
            .split("```\nwhere: ")
            .nth(1)
            .and_then(|rest| rest.split("\n```").next())
            .map(|block| format!("where: {block}"));
        let e = err("bundle.organ in ['lung', 'blood'");
        assert_eq!(shown, Some(e.to_string()));
    }

    // ---- round trip: a random tree, printed as text, parses back to itself

    fn quote(s: &str, q: char) -> String {
        let mut out = String::from(q);
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\0' => out.push_str("\\0"),
                c if c == q => {
                    out.push('\\');
                    out.push(c);
                }
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        out.push(q);
        out
    }

    #[derive(Debug, Clone, Copy)]
    struct Style {
        upper: bool,
        double_quotes: bool,
    }

    fn literal(v: &Value, style: Style) -> String {
        match v {
            Value::String(s) => quote(s, if style.double_quotes { '"' } else { '\'' }),
            Value::Number(n) => match n.as_i64() {
                Some(i) => i.to_string(),
                // Debug prints the shortest text that reads back as the same double, always
                // with a '.' or an exponent.
                None => format!("{:?}", n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::Bool(b) => kw(&b.to_string(), style),
            other => panic!("not a literal: {other}"),
        }
    }

    fn kw(word: &str, style: Style) -> String {
        if style.upper {
            word.to_uppercase()
        } else {
            word.to_string()
        }
    }

    /// The text of a tree, and its precedence: 1 `or`, 2 `and`, 3 anything tighter.
    fn print(node: &Value, style: Style) -> (String, u8) {
        let op = node["op"].as_str().unwrap_or_default();
        let field = node["field"].as_str().unwrap_or_default();
        match op {
            "and" | "or" => {
                let prec = if op == "and" { 2 } else { 1 };
                let parts: Vec<String> = node["value"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|child| {
                        let (text, p) = print(child, style);
                        // `<=`: a nested chain of the same op keeps its own node.
                        if p <= prec { format!("({text})") } else { text }
                    })
                    .collect();
                (parts.join(&format!(" {} ", kw(op, style))), prec)
            }
            "not" => {
                let (text, p) = print(&node["value"][0], style);
                let text = if p < 3 { format!("({text})") } else { text };
                (format!("{} {text}", kw("not", style)), 3)
            }
            "in" | "not in" => {
                let items: Vec<String> = node["value"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| literal(v, style))
                    .collect();
                (
                    format!("{field} {} [{}]", kw(op, style), items.join(", ")),
                    3,
                )
            }
            "is null" | "is not null" => (format!("{field} {}", kw(op, style)), 3),
            _ => {
                let written = if op == "=" { "==" } else { op };
                (
                    format!("{field} {written} {}", literal(&node["value"], style)),
                    3,
                )
            }
        }
    }

    fn literal_strategy() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<String>().prop_map(Value::String),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter_map("finite", Number::from_f64)
                .prop_map(Value::Number),
            any::<bool>().prop_map(Value::Bool),
        ]
    }

    fn leaf_strategy() -> impl Strategy<Value = Value> {
        let field = "(cell|bundle)\\.[A-Za-z_][A-Za-z0-9_]{0,10}";
        prop_oneof![
            (
                prop::sample::select(vec!["=", "!=", "<", "<=", ">", ">="]),
                field,
                literal_strategy()
            )
                .prop_map(|(op, f, v)| json!({"op": op, "field": f, "value": v})),
            (
                prop::sample::select(vec!["in", "not in"]),
                field,
                prop::collection::vec(literal_strategy(), 1..4)
            )
                .prop_map(|(op, f, v)| json!({"op": op, "field": f, "value": v})),
            (prop::sample::select(vec!["is null", "is not null"]), field)
                .prop_map(|(op, f)| json!({"op": op, "field": f})),
        ]
    }

    fn tree_strategy() -> impl Strategy<Value = Value> {
        leaf_strategy().prop_recursive(5, 48, 4, |inner| {
            prop_oneof![
                (
                    prop::sample::select(vec!["and", "or"]),
                    prop::collection::vec(inner.clone(), 2..4)
                )
                    .prop_map(|(op, v)| json!({"op": op, "value": v})),
                inner.prop_map(|v| json!({"op": "not", "value": [v]})),
            ]
        })
    }

    proptest! {
        #[test]
        fn a_printed_tree_parses_back_to_itself(
            tree in tree_strategy(),
            upper in any::<bool>(),
            double_quotes in any::<bool>(),
        ) {
            let (text, _) = print(&tree, Style { upper, double_quotes });
            let parsed = parse_where(&text, &|name| Err(format!("bare name {name}")));
            prop_assert_eq!(parsed, Ok(tree), "text: {}", text);
        }

        #[test]
        fn any_text_parses_or_fails_with_a_position_inside_it(text in "\\PC{0,80}") {
            if let Err(e) = parse(&text) {
                prop_assert!(e.position <= text.chars().count());
                prop_assert_eq!(e.to_string().lines().count(), 3);
            }
        }
    }
}
