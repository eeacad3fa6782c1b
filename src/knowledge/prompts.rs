//! Prompts as data: the seed's two few-shot prompts (blind and guided), rendered into chat
//! messages for one sentence, optionally with retrieved examples as extra turns.
//!
//! The defaults are `data/prompts/blind.json` and `data/prompts/guided.json`, compiled in and
//! byte-exact with the seed's README (a test holds them to it). A user directory holding
//! either file replaces that prompt at run time. This module only renders; sending is
//! [`crate::knowledge::llm`]'s job and judging answers is [`crate::knowledge::annotate`]'s.
//!
//! File format (JSON): `messages` is the chat, whose last message must be a `user` turn
//! containing `{text}` (the guided prompt's also `{labels}`); `retrieved_user` and
//! `retrieved_assistant` render each retrieved example. Placeholders are expanded in the last
//! message and the retrieved templates only; the few-shot turns are sent as written.

use crate::knowledge::llm::{ChatMessage, Role};
use crate::labels::LabelSet;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The shipped blind prompt (prompt 1).
pub const DEFAULT_BLIND_JSON: &str = include_str!("../../data/prompts/blind.json");
/// The shipped guided prompt (prompt 2).
pub const DEFAULT_GUIDED_JSON: &str = include_str!("../../data/prompts/guided.json");

/// File names looked for in a prompt directory.
pub const BLIND_FILE: &str = "blind.json";
/// See [`BLIND_FILE`].
pub const GUIDED_FILE: &str = "guided.json";

/// One prompt: the message list with placeholders, and how retrieved examples are rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTemplate {
    /// Free text for people editing the file; ignored.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub about: String,
    /// System prompt, few-shot turns, and last the sentence's user turn.
    pub messages: Vec<ChatMessage>,
    /// User turn of a retrieved example (`{text}`, `{labels}`).
    pub retrieved_user: String,
    /// Assistant turn of a retrieved example (`{text}`, `{labels}`).
    pub retrieved_assistant: String,
}

/// Which of the two prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Blind,
    Guided,
}

impl PromptTemplate {
    /// Parses and checks a template. `Err((line, msg))` locates a JSON error (line 0 for a
    /// structural one).
    fn parse(json: &str, kind: Kind) -> std::result::Result<PromptTemplate, (usize, String)> {
        let t: PromptTemplate =
            serde_json::from_str(json).map_err(|e| (e.line(), e.to_string()))?;
        let last = t
            .messages
            .last()
            .ok_or((0, "`messages` is empty".to_string()))?;
        if last.role != Role::User || !last.content.contains("{text}") {
            return Err((
                0,
                "the last message must be a user turn containing {text}".to_string(),
            ));
        }
        match kind {
            Kind::Guided if !last.content.contains("{labels}") => {
                return Err((
                    0,
                    "the guided prompt's last message must contain {labels} (the answer)"
                        .to_string(),
                ))
            }
            Kind::Blind if last.content.contains("{labels}") => {
                return Err((
                    0,
                    "the blind prompt's last message must not contain {labels}: it would give the answer away"
                        .to_string(),
                ))
            }
            _ => {}
        }
        if let Some(i) = t.messages.iter().position(|m| m.content.is_empty()) {
            return Err((0, format!("message {} is empty", i + 1)));
        }
        Ok(t)
    }

    /// Renders the messages for `text`: the template's turns, then one user/assistant pair
    /// per retrieved example, then the sentence's turn. `labels` fills `{labels}` in the last
    /// message (the guided prompt's answer); `None` leaves it empty.
    pub fn render(
        &self,
        text: &str,
        labels: Option<LabelSet>,
        shots: &[(String, LabelSet)],
    ) -> Vec<ChatMessage> {
        let n = self.messages.len();
        let mut out: Vec<ChatMessage> = self.messages[..n - 1].to_vec();
        for (t, l) in shots {
            let ls = l.to_string();
            out.push(ChatMessage::new(
                Role::User,
                fill(&self.retrieved_user, t, &ls),
            ));
            out.push(ChatMessage::new(
                Role::Assistant,
                fill(&self.retrieved_assistant, t, &ls),
            ));
        }
        let ls = labels.map(|l| l.to_string()).unwrap_or_default();
        out.push(ChatMessage::new(
            Role::User,
            fill(&self.messages[n - 1].content, text, &ls),
        ));
        out
    }
}

/// Expands `{text}` and `{labels}` in one pass over the template, so a sentence that itself
/// contains "{labels}" is left alone.
fn fill(template: &str, text: &str, labels: &str) -> String {
    let mut out = String::with_capacity(template.len() + text.len() + labels.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(r) = tail.strip_prefix("{text}") {
            out.push_str(text);
            rest = r;
        } else if let Some(r) = tail.strip_prefix("{labels}") {
            out.push_str(labels);
            rest = r;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Both prompts.
///
/// ```
/// use emoknow::knowledge::prompts::Prompts;
/// let p = Prompts::default();
/// let m = p.guided("今天 很 开心", "Joy,Expect".parse().unwrap(), &[]);
/// assert_eq!(m.len(), 4); // system, few-shot user, few-shot assistant, the sentence
/// assert_eq!(m[3].content, "今天 很 开心 ,答案为Joy,Expect");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompts {
    /// Prompt 1, without the answer.
    pub blind: PromptTemplate,
    /// Prompt 2, given the answer.
    pub guided: PromptTemplate,
}

impl Default for Prompts {
    /// The seed's prompts (the shipped files).
    // The shipped prompts are compiled in and a unit test parses them: these cannot fail at run
    // time.
    #[allow(clippy::expect_used)]
    fn default() -> Self {
        Prompts {
            blind: PromptTemplate::parse(DEFAULT_BLIND_JSON, Kind::Blind)
                .expect("the shipped blind prompt parses"),
            guided: PromptTemplate::parse(DEFAULT_GUIDED_JSON, Kind::Guided)
                .expect("the shipped guided prompt parses"),
        }
    }
}

impl Prompts {
    /// Loads `blind.json` and `guided.json` from `dir`; a file that is absent keeps the
    /// default. Errors: [`Error::Io`] if `dir` is not a readable directory, [`Error::Input`]
    /// naming the file (and line) of a bad template.
    pub fn load_dir(dir: &Path) -> Result<Prompts> {
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
            ));
        }
        let mut p = Prompts::default();
        for (file, kind) in [(BLIND_FILE, Kind::Blind), (GUIDED_FILE, Kind::Guided)] {
            let path = dir.join(file);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(path, e)),
            };
            let t = PromptTemplate::parse(&text, kind)
                .map_err(|(line, msg)| Error::input(&path, line, msg))?;
            match kind {
                Kind::Blind => p.blind = t,
                Kind::Guided => p.guided = t,
            }
        }
        Ok(p)
    }

    /// Writes the shipped prompt files into `dir` (created if needed) for editing; refuses to
    /// overwrite. Returns the paths written.
    pub fn write_defaults(dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut written = Vec::new();
        for (file, text) in [
            (BLIND_FILE, DEFAULT_BLIND_JSON),
            (GUIDED_FILE, DEFAULT_GUIDED_JSON),
        ] {
            let path = dir.join(file);
            if path.exists() {
                return Err(Error::Invalid(format!(
                    "{} already exists; not overwriting it",
                    path.display()
                )));
            }
            std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
            written.push(path);
        }
        Ok(written)
    }

    /// Prompt 1 for `text`, with retrieved `shots`.
    pub fn blind(&self, text: &str, shots: &[(String, LabelSet)]) -> Vec<ChatMessage> {
        self.blind.render(text, None, shots)
    }

    /// Prompt 2 for `text` given its `gold` labels, with retrieved `shots`.
    pub fn guided(
        &self,
        text: &str,
        gold: LabelSet,
        shots: &[(String, LabelSet)],
    ) -> Vec<ChatMessage> {
        self.guided.render(text, Some(gold), shots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Copied from the seed's README (两套 prompt), Python string literals transcribed.
    const SEED_SYSTEM_1: &str = "情绪文本分类任务：将一段语句进行分类，一段语句可以属于多个分类，共分为以下八个分类 Love,Joy,Anxiety,Sorrow,Expect,Hate,Surprise,Anger\n请对下述评论进行分类，并说明理由，多个分类用逗号隔开";
    const SEED_SYSTEM_2: &str = "情绪文本分类任务：将一段语句进行分类，一段语句可以属于多个分类，共分为以下八个分类 Love,Joy,Anxiety,Sorrow,Expect,Hate,Surprise,Anger\n请根据答案对下述评论进行分类，并说明理由，多个分类用逗号隔开";
    const SEED_USER_1: &str = "５０ 年 遇 大雪 阻断 无数 游子 回家 归途 也 影响 正常 上下班";
    const SEED_USER_2: &str =
        "５０ 年 遇 大雪 阻断 无数 游子 回家 归途 也 影响 正常 上下班 ,答案为Anxiety";
    const SEED_ASSISTANT: &str = "这段评论包含以下分类:\nAnxiety\n\n理由:\n\n\"遇大雪阻断无数游子回家归途\"表明大雪天气阻挡了许多离家游子的归途,可能感到担忧无法按时回家\n\"也影响正常上下班\"一语,说明大雪对日常上下班造成影响,可能引发人们工作是否如期的焦虑\n总体来说,这段评论着重描述大雪对人们生活规律的干扰,可能使读者有回家或上下班计划面临难题的担忧之情,属于Anxiety情绪分类。";

    fn roles(m: &[ChatMessage]) -> Vec<Role> {
        m.iter().map(|m| m.role).collect()
    }

    #[test]
    fn defaults_reproduce_the_seed_prompts_exactly() {
        let p = Prompts::default();
        let b = p.blind("今天 很 开心", &[]);
        assert_eq!(
            roles(&b),
            [Role::System, Role::User, Role::Assistant, Role::User]
        );
        assert_eq!(b[0].content, SEED_SYSTEM_1);
        assert_eq!(b[1].content, SEED_USER_1);
        assert_eq!(b[2].content, SEED_ASSISTANT);
        assert_eq!(b[3].content, "今天 很 开心");
        let g = p.guided("今天 很 开心", "Joy,Expect".parse().unwrap(), &[]);
        assert_eq!(g[0].content, SEED_SYSTEM_2);
        assert_eq!(g[1].content, SEED_USER_2);
        assert_eq!(g[2].content, SEED_ASSISTANT);
        assert_eq!(g[3].content, "今天 很 开心 ,答案为Joy,Expect");
        // The guided template applied to the seed's own example gives the seed's user turn.
        let own = p.guided(SEED_USER_1, "Anxiety".parse().unwrap(), &[]);
        assert_eq!(own[3].content, SEED_USER_2);
    }

    #[test]
    fn retrieved_shots_go_before_the_sentence() {
        let p = Prompts::default();
        let shots = vec![
            ("好 车".to_string(), "Love".parse().unwrap()),
            ("吓 一跳".to_string(), "Surprise,Anxiety".parse().unwrap()),
        ];
        let b = p.blind("句子", &shots);
        assert_eq!(b.len(), 8);
        assert_eq!(
            roles(&b[3..]),
            [
                Role::User,
                Role::Assistant,
                Role::User,
                Role::Assistant,
                Role::User
            ]
        );
        assert_eq!(b[3].content, "好 车");
        assert_eq!(b[4].content, "这段评论包含以下分类:\nLove");
        assert_eq!(b[6].content, "这段评论包含以下分类:\nAnxiety,Surprise");
        assert_eq!(b[7].content, "句子");
        let g = p.guided("句子", "Joy".parse().unwrap(), &shots);
        assert_eq!(g[3].content, "好 车 ,答案为Love");
        assert_eq!(g[7].content, "句子 ,答案为Joy");
    }

    #[test]
    fn placeholders_in_the_sentence_are_not_expanded() {
        assert_eq!(
            fill("{text}|{labels}", "a {labels} {b", "Joy"),
            "a {labels} {b|Joy"
        );
        assert_eq!(fill("{x}{text}", "t", ""), "{x}t");
    }

    #[test]
    fn load_dir_overrides_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        // Empty dir: defaults.
        assert_eq!(Prompts::load_dir(dir.path()).unwrap(), Prompts::default());
        let paths = Prompts::write_defaults(dir.path()).unwrap();
        assert_eq!(paths.len(), 2);
        assert!(Prompts::write_defaults(dir.path()).is_err(), "no overwrite");
        let edited = DEFAULT_BLIND_JSON.replace("请对下述评论进行分类", "请分类");
        std::fs::write(dir.path().join(BLIND_FILE), edited).unwrap();
        let p = Prompts::load_dir(dir.path()).unwrap();
        assert!(p.blind("x", &[])[0].content.contains("请分类"));
        assert_eq!(p.guided, Prompts::default().guided);
        // A blind prompt that leaks {labels} is refused, naming the file.
        let leaky = DEFAULT_BLIND_JSON.replacen("\"{text}\"", "\"{text} {labels}\"", 1);
        std::fs::write(dir.path().join(BLIND_FILE), leaky).unwrap();
        let e = Prompts::load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("blind.json") && e.contains("give the answer away"),
            "{e}"
        );
        // Broken JSON: the line is reported.
        std::fs::write(dir.path().join(GUIDED_FILE), "{\n\"messages\": [,\n]}").unwrap();
        std::fs::write(dir.path().join(BLIND_FILE), DEFAULT_BLIND_JSON).unwrap();
        let e = Prompts::load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("guided.json:2"), "{e}");
        assert!(Prompts::load_dir(&dir.path().join("nope")).is_err());
    }
}
