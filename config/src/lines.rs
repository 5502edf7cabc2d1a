//! Field path -> line number, so that every finding points at the line to fix.
//!
//! serde does not keep positions, so the text is walked once more with yaml-rust2's event
//! parser, recording the line of every mapping key and sequence item under the same path syntax
//! the validators use (`spec.ports[1].name`). This runs only for files that have findings.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::finding::Finding;

/// Lines of one YAML document.
#[derive(Debug, Default)]
struct DocLines {
    start: usize,
    paths: HashMap<String, usize>,
}

#[derive(Debug)]
enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Debug, Default)]
struct Indexer {
    docs: Vec<DocLines>,
    current: Option<DocLines>,
    stack: Vec<Frame>,
}

impl Indexer {
    /// The path of the value about to start, or `None` when a mapping key is expected.
    fn value_path(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map {
                path,
                key: Some(key),
            }) => Some(join(path, key)),
            Some(Frame::Seq { path, index }) => Some(format!("{path}[{index}]")),
        }
    }

    fn record(&mut self, path: String, line: usize) {
        if let Some(doc) = self.current.as_mut() {
            doc.paths.entry(path).or_insert(line);
        }
    }

    /// A value (scalar or container) has ended: move the parent on.
    fn advance(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }

    fn start_container(&mut self, mark: Marker, map: bool) {
        let path = match self.value_path() {
            Some(path) => path,
            // A complex (mapping or sequence) key: give it a placeholder name.
            None => {
                if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                    *key = Some("?".into());
                }
                self.value_path().unwrap_or_default()
            }
        };
        self.record(path.clone(), mark.line());
        self.stack.push(if map {
            Frame::Map { path, key: None }
        } else {
            Frame::Seq { path, index: 0 }
        });
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::DocumentStart => {
                self.stack.clear();
                self.current = Some(DocLines {
                    start: mark.line(),
                    paths: HashMap::new(),
                });
            }
            Event::DocumentEnd => {
                if let Some(doc) = self.current.take() {
                    self.docs.push(doc);
                }
            }
            Event::MappingStart(..) => self.start_container(mark, true),
            Event::SequenceStart(..) => self.start_container(mark, false),
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.advance();
            }
            Event::Scalar(value, ..) => match self.value_path() {
                None => {
                    let parent = match self.stack.last() {
                        Some(Frame::Map { path, .. }) => path.clone(),
                        _ => String::new(),
                    };
                    self.record(join(&parent, &value), mark.line());
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some(value);
                    }
                }
                Some(path) => {
                    self.record(path, mark.line());
                    self.advance();
                }
            },
            Event::Alias(_) => {
                if let Some(path) = self.value_path() {
                    self.record(path, mark.line());
                }
                self.advance();
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
        }
    }
}

/// The line index of one file's text.
#[derive(Debug, Default)]
pub struct LineIndex {
    docs: Vec<DocLines>,
}

impl LineIndex {
    /// Index `text`. A text yaml-rust2 cannot parse gives an index that knows no lines.
    pub fn new(text: &str) -> Self {
        let mut indexer = Indexer::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut indexer, true).is_err() {
            // Keep what was indexed before the error; findings fall back to line 1.
            if let Some(doc) = indexer.current.take() {
                indexer.docs.push(doc);
            }
        }
        Self { docs: indexer.docs }
    }

    /// The line of `path` in document `doc`, or of its closest recorded ancestor, or the
    /// document's first line.
    pub fn line(&self, doc: usize, path: &str) -> Option<usize> {
        let doc = self.docs.get(doc)?;
        let mut path = path;
        loop {
            if let Some(&line) = doc.paths.get(path) {
                return Some(line);
            }
            match path.rfind(['.', '[']) {
                Some(i) => path = &path[..i],
                None => break,
            }
        }
        doc.paths.get("").copied().or(Some(doc.start))
    }
}

/// Fill in `line` of every finding of this file that does not know it yet.
pub fn resolve(text: &str, findings: &mut [Finding]) {
    if findings.iter().all(|f| f.line != 0) {
        return;
    }
    let index = LineIndex::new(text);
    for finding in findings.iter_mut().filter(|f| f.line == 0) {
        let path = match finding.origin.item {
            Some(item) if finding.path.is_empty() => format!("items[{item}]"),
            Some(item) => format!("items[{item}].{}", finding.path),
            None => finding.path.clone(),
        };
        finding.line = index.line(finding.origin.doc, &path).unwrap_or(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_lines() {
        let text = "a: 1\nspec:\n  hosts:\n  - x\n  - y\n  ports:\n  - name: p\n    number: 80\n---\nb: 2\n";
        let index = LineIndex::new(text);
        assert_eq!(index.line(0, "a"), Some(1));
        assert_eq!(index.line(0, "spec.hosts[1]"), Some(5));
        assert_eq!(index.line(0, "spec.ports[0].number"), Some(8));
        assert_eq!(index.line(0, "spec.ports[0].missing"), Some(7));
        assert_eq!(index.line(1, "b"), Some(10));
        assert_eq!(index.line(2, "b"), None);
    }

    #[test]
    fn flow_style_and_lists() {
        let text = "kind: List\nitems:\n- kind: A\n  spec: {hosts: [a, b]}\n- kind: B\n  spec:\n    x: 1\n";
        let index = LineIndex::new(text);
        assert_eq!(index.line(0, "items[1].spec.x"), Some(7));
        assert_eq!(index.line(0, "items[0].spec.hosts[1]"), Some(4));
    }
}
