//! Reading VLMEvalKit-layout benchmark TSVs.
//!
//! The file is tab-separated with a header row and `"`-quoting (as pandas writes it). Columns read
//! (matched case-insensitively; everything else is ignored):
//!
//! | column | use |
//! | --- | --- |
//! | `index` | required; the item's identity (predictions and resume key on it); must be unique |
//! | `question` | required |
//! | `answer` | required; an option letter (or the option's text), Yes/No, a number with or without unit, a Q-Spatial tuple `(45, 'cm')`, or free text |
//! | `image` | base64 image; a value of at most 64 characters is the `index` of the row holding the image (VLMEvalKit's space saving) |
//! | `image_path` | used when `image` is absent or empty: a path relative to the TSV's folder or an image root (first of a comma-separated list) |
//! | `A` … `Z` | option texts; empty or `nan` means the option is absent. A multiple-choice item without option columns takes its options from the question text ([`inline_options`]) |
//! | `category` | the reporting group (falls back to `l2-category`, then `all`) |
//! | `answer_type` / `type` / `question_type` | the answer kind, first one recognised: `MCQ`/`multi_choice`, `YN`/`YesNo`, `Number`/`float`, `Number_Int`/`integer`, `open`/`free_form`; otherwise inferred (options present → multiple choice; answer yes/no → Yes/No; whole answer a quantity → number; else open) |
//! | `unit` | unit of a unitless numeric answer (`cm`, `meters`, …) |
//! | `hint` | shown before the question |

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine;
use image::RgbImage;
use regex::Regex;

use crate::error::EvalError;
use crate::extract::{parse_ground_truth_number, Prediction};
use crate::units::LengthUnit;

/// How an item's answer is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerKind {
    /// Option letter; accuracy.
    MultipleChoice,
    /// Yes or No; accuracy.
    YesNo,
    /// A real number (often a length); mean relative accuracy and success rate.
    Number,
    /// An integer (counts); exact-match accuracy, as SIBench scores `Number_Int`.
    NumberInt,
    /// Free text; case-insensitive exact match (use the judge for anything smarter).
    Open,
}

impl AnswerKind {
    /// Recognises a `type`-column value; `None` for values that say nothing about the answer.
    pub fn from_type_name(name: &str) -> Option<Self> {
        let n = name
            .trim()
            .to_ascii_lowercase()
            .replace(['-', ' ', '/'], "_");
        Some(match n.as_str() {
            "mcq" | "multi_choice" | "multiple_choice" | "choice" | "single_choice" => {
                Self::MultipleChoice
            }
            "yn" | "yesno" | "yes_no" | "yorn" => Self::YesNo,
            "number" | "float" | "numeric" | "number_float" => Self::Number,
            "number_int" | "integer" | "int" | "count" => Self::NumberInt,
            "open" | "free_form" | "text" | "vqa" => Self::Open,
            _ => return None,
        })
    }
}

/// One benchmark question.
#[derive(Debug, Clone)]
pub struct BenchItem {
    /// 1-based data row (for error messages).
    pub row: usize,
    pub index: String,
    pub question: String,
    pub hint: Option<String>,
    /// The valid options in letter order: from the option columns, or else (multiple choice only)
    /// parsed from the question text (see [`inline_options`]).
    pub options: Vec<(char, String)>,
    /// Whether the options are already written in the question (so the prompt does not repeat them).
    pub options_in_question: bool,
    /// The answer as written in the file.
    pub answer_raw: String,
    /// The parsed ground truth; its variant matches `kind`.
    pub answer: Prediction,
    pub category: String,
    pub kind: AnswerKind,
    /// The unit to ask for, from a `unit` column (the ground truth's own unit is not revealed).
    pub unit: Option<LengthUnit>,
    image: ImageRef,
}

impl BenchItem {
    /// Accuracy of a uniform guess: 1 / options for multiple choice, 1/2 for yes/no, `None` for
    /// numbers, counts and open answers (no finite set to guess from).
    pub fn chance(&self) -> Option<f64> {
        match self.kind {
            AnswerKind::MultipleChoice if !self.options.is_empty() => {
                Some(1.0 / self.options.len() as f64)
            }
            AnswerKind::YesNo => Some(0.5),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum ImageRef {
    /// Key into [`Bench::images`].
    Base64(String),
    Path(PathBuf),
}

/// A loaded benchmark: its items in file order and the base64 images they refer to.
#[derive(Debug)]
pub struct Bench {
    pub path: PathBuf,
    pub items: Vec<BenchItem>,
    images: HashMap<String, String>,
}

struct Columns {
    index: usize,
    question: usize,
    answer: usize,
    image: Option<usize>,
    image_path: Option<usize>,
    options: Vec<(char, usize)>,
    category: Option<usize>,
    kinds: Vec<usize>,
    unit: Option<usize>,
    hint: Option<usize>,
}

impl Columns {
    fn find(path: &Path, header: &csv::StringRecord) -> Result<Self, EvalError> {
        let pos = |name: &str| {
            header
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        };
        let need = |name: &str| {
            pos(name).ok_or_else(|| EvalError::MissingColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
            })
        };
        let options = ('A'..='Z')
            .filter_map(|c| {
                header
                    .iter()
                    .position(|h| h.trim() == c.to_string())
                    .map(|i| (c, i))
            })
            .collect();
        let image = pos("image");
        let image_path = pos("image_path");
        if image.is_none() && image_path.is_none() {
            return Err(EvalError::MissingColumn {
                path: path.to_path_buf(),
                column: "image (or image_path)".into(),
            });
        }
        Ok(Self {
            index: need("index")?,
            question: need("question")?,
            answer: need("answer")?,
            image,
            image_path,
            options,
            category: pos("category").or_else(|| pos("l2-category")),
            kinds: ["answer_type", "type", "question_type"]
                .iter()
                .filter_map(|n| pos(n))
                .collect(),
            unit: pos("unit"),
            hint: pos("hint"),
        })
    }
}

/// A field's trimmed value unless it is empty or pandas' `nan` (a missing value).
fn present(s: Option<&str>) -> Option<&str> {
    let s = s?.trim();
    (!s.is_empty() && !s.eq_ignore_ascii_case("nan")).then_some(s)
}

impl Bench {
    /// Reads and validates a benchmark TSV (see the module docs for the columns).
    pub fn load(path: &Path) -> Result<Self, EvalError> {
        Self::load_with_image_root(path, None)
    }

    /// Like [`Bench::load`], with `image_path` values resolved against `image_root` instead of
    /// the TSV's folder (VLMEvalKit keeps SIBench images under `LMUData/images`).
    pub fn load_with_image_root(path: &Path, image_root: Option<&Path>) -> Result<Self, EvalError> {
        let csv_err = |source| EvalError::Csv {
            path: path.to_path_buf(),
            source,
        };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b'\t')
            .has_headers(true)
            .flexible(true)
            .from_path(path)
            .map_err(csv_err)?;
        let header = reader.headers().map_err(csv_err)?.clone();
        let cols = Columns::find(path, &header)?;
        let base_dir = match image_root {
            Some(root) => root.to_path_buf(),
            None => path.parent().map(Path::to_path_buf).unwrap_or_default(),
        };

        let mut items = Vec::new();
        let mut images: HashMap<String, String> = HashMap::new();
        let mut refs: Vec<(usize, String)> = Vec::new(); // (item position, referenced index)
        let mut seen: HashMap<String, usize> = HashMap::new();

        for (i, record) in reader.records().enumerate() {
            let row = i + 1;
            let record = record.map_err(csv_err)?;
            let get = |c: usize| record.get(c).unwrap_or("");
            let index = get(cols.index).trim().to_string();
            let bad = |field: &str, message: String| EvalError::BadField {
                path: path.to_path_buf(),
                row,
                index: index.clone(),
                field: field.to_string(),
                message,
            };
            if index.is_empty() {
                return Err(bad("index", "empty".into()));
            }
            if let Some(first) = seen.insert(index.clone(), row) {
                return Err(EvalError::DuplicateIndex {
                    path: path.to_path_buf(),
                    index,
                    first,
                    second: row,
                });
            }
            let question = get(cols.question).to_string();
            let answer_raw = get(cols.answer).trim().to_string();
            if answer_raw.is_empty() {
                return Err(bad("answer", "empty".into()));
            }
            let options: Vec<(char, String)> = cols
                .options
                .iter()
                .filter_map(|(c, col)| present(record.get(*col)).map(|v| (*c, v.to_string())))
                .collect();
            let category = cols
                .category
                .and_then(|c| present(record.get(c)))
                .unwrap_or("all")
                .to_string();
            let hint = cols
                .hint
                .and_then(|c| present(record.get(c)))
                .map(str::to_string);
            let unit_col = cols.unit.and_then(|c| present(record.get(c)));
            let unit_from_col = match unit_col {
                Some(u) => Some(
                    LengthUnit::parse(u)
                        .ok_or_else(|| bad("unit", format!("unknown unit `{u}`")))?,
                ),
                None => None,
            };
            let declared = cols
                .kinds
                .iter()
                .filter_map(|c| present(record.get(*c)))
                .find_map(AnswerKind::from_type_name);
            let kind = declared.unwrap_or_else(|| infer_kind(&options, &answer_raw, unit_from_col));
            let options_in_question = kind == AnswerKind::MultipleChoice && options.is_empty();
            let options = if options_in_question {
                inline_options(&question, &answer_raw)
            } else {
                options
            };
            let answer = parse_answer(kind, &answer_raw, &options, unit_from_col)
                .map_err(|m| bad("answer", m))?;
            let unit = unit_from_col;

            let image = match (cols.image, cols.image_path) {
                (Some(c), _) if present(record.get(c)).is_some() => {
                    let v = get(c).trim();
                    if v.starts_with('[') {
                        return Err(bad("image", "multi-image items are not supported".into()));
                    }
                    if v.len() <= 64 {
                        refs.push((items.len(), v.to_string()));
                    } else {
                        images.insert(index.clone(), v.to_string());
                    }
                    ImageRef::Base64(index.clone())
                }
                (_, Some(c)) if present(record.get(c)).is_some() => {
                    let first = get(c).split(',').next().unwrap_or("").trim();
                    let first = first.trim_matches(|ch| "[]'\" ".contains(ch));
                    ImageRef::Path(base_dir.join(first))
                }
                _ => return Err(bad("image", "no image".into())),
            };

            items.push(BenchItem {
                row,
                index,
                question,
                hint,
                options,
                options_in_question,
                answer_raw,
                answer,
                category,
                kind,
                unit,
                image,
            });
        }

        // Resolve short `image` values that name another row.
        for (pos, target) in refs {
            let item = &mut items[pos];
            if !images.contains_key(&target) {
                return Err(EvalError::BadField {
                    path: path.to_path_buf(),
                    row: item.row,
                    index: item.index.clone(),
                    field: "image".into(),
                    message: format!("refers to index `{target}`, which has no image data"),
                });
            }
            item.image = ImageRef::Base64(target);
        }
        Ok(Self {
            path: path.to_path_buf(),
            items,
            images,
        })
    }

    /// For each of `items`, the position in `items` of the next item (cyclically, in file order)
    /// whose picture is a different one: the "shuffled images" control, in which every question
    /// is asked about another item's picture. Two items show the same picture when their image
    /// data are the same string (whether shared by index, as VLMEvalKit does, or repeated) or
    /// they name the same path. Deterministic and linear in the number of items; an error when
    /// `items` hold fewer than two distinct pictures.
    pub fn other_pictures(&self, items: &[BenchItem]) -> Result<Vec<usize>, EvalError> {
        #[derive(PartialEq, Eq, Hash)]
        enum Picture<'a> {
            Data(&'a str),
            Path(&'a Path),
        }
        let mut ids: HashMap<Picture, usize> = HashMap::new();
        let picture: Vec<usize> = items
            .iter()
            .map(|item| {
                let key = match &item.image {
                    ImageRef::Base64(k) => Picture::Data(self.images.get(k).map_or(k, |d| d)),
                    ImageRef::Path(p) => Picture::Path(p),
                };
                let next = ids.len();
                *ids.entry(key).or_insert(next)
            })
            .collect();
        let n = items.len();
        if ids.len() < 2 {
            return Err(EvalError::InvalidValue {
                what: "images",
                value: "shuffled".into(),
                message: format!(
                    "{}: the items evaluated show fewer than two distinct pictures, so none can \
                     be asked about another's",
                    self.path.display()
                ),
            });
        }
        // Walking backwards over two laps, `next` is the nearest later position (cyclically)
        // that starts a different picture.
        let mut other = vec![0; n];
        let mut next = None;
        for k in (0..2 * n).rev() {
            let (i, after) = (k % n, (k + 1) % n);
            if picture[after] != picture[i] {
                next = Some(after);
            }
            if k < n {
                other[i] = next.expect("two distinct pictures");
            }
        }
        Ok(other)
    }

    /// Decodes an item's image to RGB.
    pub fn image(&self, item: &BenchItem) -> Result<RgbImage, EvalError> {
        let bad = |message: String| EvalError::BadField {
            path: self.path.clone(),
            row: item.row,
            index: item.index.clone(),
            field: "image".into(),
            message,
        };
        match &item.image {
            ImageRef::Base64(key) => {
                let data = self
                    .images
                    .get(key)
                    .ok_or_else(|| bad(format!("no image data for index `{key}`")))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| bad(format!("invalid base64: {e}")))?;
                let img = image::load_from_memory(&bytes)
                    .map_err(|e| bad(format!("cannot decode image: {e}")))?;
                Ok(img.to_rgb8())
            }
            ImageRef::Path(p) => {
                let img =
                    image::open(p).map_err(|e| bad(format!("cannot open {}: {e}", p.display())))?;
                Ok(img.to_rgb8())
            }
        }
    }
}

impl BenchItem {
    /// An item with a dummy ground truth and no image, for unit tests of other modules.
    #[cfg(test)]
    pub(crate) fn for_test(kind: AnswerKind, question: &str, options: Vec<(char, String)>) -> Self {
        Self {
            row: 1,
            index: "1".into(),
            question: question.into(),
            hint: None,
            options,
            options_in_question: false,
            answer_raw: String::new(),
            answer: Prediction::Text(String::new()),
            category: "all".into(),
            kind,
            unit: None,
            image: ImageRef::Path(PathBuf::new()),
        }
    }
}

/// Options of a multiple-choice question that has no option columns (SIBench writes them into
/// the question): markers `A.`, `A)`, `(A)` or `A:` at a line start or after white space, which must
/// run A, B, C, … (at least two); each option's text runs to the next marker. Without such markers
/// the letters A–D (extended to the answer's letter) are valid, with no texts.
pub fn inline_options(question: &str, answer: &str) -> Vec<(char, String)> {
    static MARKER: OnceLock<Regex> = OnceLock::new();
    let marker =
        MARKER.get_or_init(|| Regex::new(r"(?:^|\s)\(?([A-H])[.):]\s").expect("static regex"));
    let mut found: Vec<(char, usize, usize)> = Vec::new(); // (letter, marker start, text start)
    for c in marker.captures_iter(question) {
        let (Some(m), Some(l)) = (c.get(0), c.get(1)) else {
            continue;
        };
        let letter = l.as_str().chars().next().unwrap_or('A');
        let expected = (b'A' + found.len() as u8) as char;
        if letter == expected {
            found.push((letter, m.start(), m.end()));
        } else if letter == 'A' {
            // A new list starts: keep the later one.
            found.clear();
            found.push((letter, m.start(), m.end()));
        }
    }
    if found.len() >= 2 {
        return found
            .iter()
            .enumerate()
            .map(|(i, &(letter, _, text_start))| {
                let end = found.get(i + 1).map_or(question.len(), |n| n.1);
                let text = question[text_start..end]
                    .trim()
                    .trim_end_matches([',', ';']);
                (letter, text.trim().to_string())
            })
            .collect();
    }
    let answer_letter = answer
        .trim()
        .chars()
        .next()
        .filter(|c| c.is_ascii_uppercase() && answer.trim().len() == 1)
        .unwrap_or('D');
    ('A'..=answer_letter.max('D'))
        .map(|c| (c, String::new()))
        .collect()
}

fn infer_kind(options: &[(char, String)], answer: &str, unit: Option<LengthUnit>) -> AnswerKind {
    if !options.is_empty() {
        AnswerKind::MultipleChoice
    } else if answer.eq_ignore_ascii_case("yes") || answer.eq_ignore_ascii_case("no") {
        AnswerKind::YesNo
    } else if parse_ground_truth_number(answer, unit).is_some() {
        AnswerKind::Number
    } else {
        AnswerKind::Open
    }
}

/// Parses the ground truth of an item of `kind`; the error is a message for [`EvalError::BadField`].
fn parse_answer(
    kind: AnswerKind,
    answer: &str,
    options: &[(char, String)],
    unit: Option<LengthUnit>,
) -> Result<Prediction, String> {
    match kind {
        AnswerKind::MultipleChoice => {
            if options.is_empty() {
                return Err("multiple-choice item without options".into());
            }
            let letter = answer
                .trim_matches(|c: char| "()[]. ".contains(c))
                .chars()
                .collect::<Vec<_>>();
            if let [c] = letter.as_slice() {
                let c = c.to_ascii_uppercase();
                if options.iter().any(|(l, _)| *l == c) {
                    return Ok(Prediction::Letter(c));
                }
            }
            options
                .iter()
                .find(|(_, text)| text.trim().eq_ignore_ascii_case(answer))
                .map(|(l, _)| Prediction::Letter(*l))
                .ok_or_else(|| {
                    format!("`{answer}` is neither an option letter nor an option's text")
                })
        }
        AnswerKind::YesNo => crate::extract::extract_yes_no(answer)
            .map(Prediction::YesNo)
            .ok_or_else(|| format!("`{answer}` is not Yes or No")),
        AnswerKind::Number | AnswerKind::NumberInt => parse_ground_truth_number(answer, unit)
            .map(Prediction::Number)
            .ok_or_else(|| format!("`{answer}` is not a number")),
        AnswerKind::Open => Ok(Prediction::Text(answer.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::Quantity;
    use std::io::Write;

    fn png_b64(rgb: [u8; 3]) -> String {
        let img = RgbImage::from_pixel(2, 2, image::Rgb(rgb));
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .expect("encode png");
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn write(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("bench.tsv");
        let mut f = std::fs::File::create(&p).expect("create");
        f.write_all(body.as_bytes()).expect("write");
        p
    }

    #[test]
    fn other_pictures_skip_every_copy_of_the_same_picture() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (red, blue) = (png_b64([200, 0, 0]), png_b64([0, 0, 200]));
        // Item 4 repeats item 1's picture inline, item 2 shares it by index.
        let body = format!(
            "index\timage\tquestion\tanswer\n\
             1\t{red}\tq\tyes\n\
             2\t1\tq\tyes\n\
             3\t{blue}\tq\tyes\n\
             4\t{red}\tq\tyes\n\
             5\t{red}\tq\tyes\n"
        );
        let bench = Bench::load(&write(dir.path(), &body)).expect("load");
        let other = bench.other_pictures(&bench.items).expect("two pictures");
        assert_eq!(other, vec![2, 2, 3, 2, 2]);
        let err = bench.other_pictures(&bench.items[..2]).unwrap_err();
        assert!(
            err.to_string().contains("fewer than two distinct pictures"),
            "{err}"
        );
    }

    #[test]
    fn loads_kinds_options_and_image_references() {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = png_b64([10, 20, 30]);
        let body = format!(
            "index\timage\tquestion\tA\tB\tC\tanswer\tcategory\ttype\tunit\n\
             1\t{img}\tWhich?\tred\tblue\t\tB\tpos\tMCQ\t\n\
             2\t1\tIs it?\t\t\tnan\tyes\tpos\t\t\n\
             3\t1\tHow far?\t\t\t\t1.5\tdist\tNumber\tm\n\
             4\t{img}\tHow many?\t\t\t\t3\tcount\tNumber_Int\t\n\
             5\t{img}\tHeight?\t\t\t\t(45, 'centimeters')\tq\t\t\n\
             6\t{img}\tColour?\tred\tblue\t\tblue\tpos\t\t\n"
        );
        let bench = Bench::load(&write(dir.path(), &body)).expect("load");
        let kinds: Vec<AnswerKind> = bench.items.iter().map(|i| i.kind).collect();
        use AnswerKind::*;
        assert_eq!(
            kinds,
            [
                MultipleChoice,
                YesNo,
                Number,
                NumberInt,
                Number,
                MultipleChoice
            ]
        );
        assert_eq!(
            bench.items[0].options.len(),
            2,
            "empty C column is no option"
        );
        assert_eq!(bench.items[0].answer, Prediction::Letter('B'));
        assert_eq!(bench.items[1].answer, Prediction::YesNo(true));
        assert_eq!(
            bench.items[2].answer,
            Prediction::Number(Quantity::length(1.5, LengthUnit::Meter))
        );
        assert_eq!(
            bench.items[4].answer,
            Prediction::Number(Quantity::length(45.0, LengthUnit::Centimeter))
        );
        assert_eq!(
            bench.items[5].answer,
            Prediction::Letter('B'),
            "answer given as option text"
        );
        // Row 2 refers to row 1's image.
        let px = bench.image(&bench.items[1]).expect("image");
        assert_eq!(px.get_pixel(1, 1).0, [10, 20, 30]);
    }

    #[test]
    fn options_written_in_the_question() {
        let q = "Which is nearer?\nA. the red chair\nB. the lamp, C) the door";
        assert_eq!(
            inline_options(q, "B"),
            vec![
                ('A', "the red chair".to_string()),
                ('B', "the lamp".into()),
                ('C', "the door".into())
            ]
        );
        let q = "Options: (A) left (B) right";
        assert_eq!(
            inline_options(q, "A"),
            vec![('A', "left".to_string()), ('B', "right".into())]
        );
        // No markers: letters A–D, extended to the answer's letter.
        let letters: Vec<char> = inline_options("Pick one.", "F")
            .iter()
            .map(|o| o.0)
            .collect();
        assert_eq!(letters, ['A', 'B', 'C', 'D', 'E', 'F']);
        assert_eq!(inline_options("Pick one.", "B").len(), 4);

        let dir = tempfile::tempdir().expect("tempdir");
        let img = png_b64([0, 0, 0]);
        let p = write(
            dir.path(),
            &format!(
                "index\timage\tquestion\tanswer\ttype\n1\t{img}\tWhich? A. up B. down\tB\tMCQ\n"
            ),
        );
        let bench = Bench::load(&p).expect("load");
        let item = &bench.items[0];
        assert!(item.options_in_question);
        assert_eq!(item.options.len(), 2);
        assert_eq!(item.answer, Prediction::Letter('B'));
    }

    #[test]
    fn image_paths_resolve_against_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("images");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        RgbImage::from_pixel(1, 1, image::Rgb([5, 6, 7]))
            .save(root.join("sub/a.png"))
            .expect("save");
        let p = write(
            dir.path(),
            "index\timage_path\tquestion\tanswer\n1\t['sub/a.png']\tIs it?\tyes\n",
        );
        let bench = Bench::load_with_image_root(&p, Some(&root)).expect("load");
        assert_eq!(
            bench
                .image(&bench.items[0])
                .expect("image")
                .get_pixel(0, 0)
                .0,
            [5, 6, 7]
        );
        // Relative to the TSV's folder the file does not exist: the error names the field.
        let bench = Bench::load(&p).expect("load");
        let err = bench
            .image(&bench.items[0])
            .expect_err("missing")
            .to_string();
        assert!(
            err.contains("field `image`") && err.contains("sub/a.png"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_file_row_and_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = png_b64([0, 0, 0]);
        let p = write(
            dir.path(),
            &format!("index\timage\tquestion\tA\tB\tanswer\n1\t{img}\tq\tx\ty\tF\n"),
        );
        let err = Bench::load(&p).expect_err("bad answer").to_string();
        assert!(
            err.contains("bench.tsv") && err.contains("row 1") && err.contains("`answer`"),
            "{err}"
        );

        let p = write(dir.path(), "index\timage\tquestion\tanswer\n1\t7\tq\tyes\n");
        let err = Bench::load(&p).expect_err("dangling ref").to_string();
        assert!(err.contains("refers to index `7`"), "{err}");

        let p = write(dir.path(), "index\timage\tquestion\n1\tx\tq\n");
        let err = Bench::load(&p).expect_err("no answer column").to_string();
        assert!(err.contains("missing required column `answer`"), "{err}");

        let p = write(
            dir.path(),
            &format!("index\timage\tquestion\tanswer\n1\t{img}\tq\tyes\n1\t{img}\tq\tno\n"),
        );
        assert!(matches!(
            Bench::load(&p),
            Err(EvalError::DuplicateIndex { .. })
        ));

        let p = write(
            dir.path(),
            &format!(
                "index\timage\tquestion\tanswer\n1\t{}\tq\tyes\n",
                "!".repeat(80)
            ),
        );
        let bench = Bench::load(&p).expect("loads lazily");
        let err = bench
            .image(&bench.items[0])
            .expect_err("not base64")
            .to_string();
        assert!(err.contains("invalid base64"), "{err}");
    }
}
