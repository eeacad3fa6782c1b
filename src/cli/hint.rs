//! Flag-level hints for library errors. The library says what is wrong in its own terms (a
//! model output directory, an ensemble member, the longest wait); this maps that to the flags
//! of the command line, printed as a second line `hint: …` after the error.

use emoknow::corpus::Split;
use emoknow::error::{OutPathReason, SourceRole};
use emoknow::Error;

/// What to do about records that no longer decode: sled cannot repair them in place.
pub const DAMAGED_RECORDS: &str = "`emoknow check` lists the damaged records; restore the store from a copy, or ingest the corpus into a new store (`emoknow --store NEW ingest FILE`) and import or annotate its knowledge again";

/// The hint for the first library error in `err`'s chain, if it has one.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    err.chain()
        .find_map(|e| e.downcast_ref::<Error>())
        .and_then(hint_for)
}

/// The flag that sets the library config field `name`.
fn flag_of(name: &str) -> Option<&'static str> {
    Some(match name {
        "stack_folds" => "--stack-linear",
        "neighbours_k" => "--neighbours-k, or rerun `knowledge retrieve` with a larger -k",
        "rpm" => "--rpm",
        "members" => "--member: fewer members, or members nested less deep",
        "max_wait_secs" => "--max-wait",
        "timeout_secs" => "--timeout",
        "endpoint" => "--endpoint",
        "context" => {
            "--context (to 0) or --knowledge, or use --classifier linear, frozen or finetune"
        }
        _ => return None,
    })
}

fn source_flag(role: SourceRole) -> &'static str {
    match role {
        SourceRole::Rationale => "--source",
        SourceRole::EvalRationale => "--eval-source",
        SourceRole::Neighbours => "--neighbours-source",
    }
}

fn hint_for(e: &Error) -> Option<String> {
    Some(match e {
        Error::StoreLocked { .. } => "pass another --store to use a different store".into(),
        Error::Corrupt(_) | Error::CorruptRecord { .. } => DAMAGED_RECORDS.into(),
        Error::StoreNeedsMigration { .. } => {
            "run `emoknow migrate` (any other command but `serve` also migrates it first)".into()
        }
        Error::NoStore { .. } => {
            "pass --store DIR (or set EMOKNOW_STORE) to use a store elsewhere".into()
        }
        Error::InputBatch { .. } => {
            "fix them, or ingest with --skip-bad to write the good rows and list the bad ones"
                .into()
        }
        Error::Input { msg, .. } if msg.contains("the file's document column") => {
            "if it names each row's document, pass --doc-column with its name".into()
        }
        Error::IdConflicts {
            replaceable: true, ..
        } => "pass --replace to overwrite what the store holds under those ids".into(),
        Error::UnknownExamples { .. } => {
            "check --first-id (or --ids): it numbers the records".into()
        }
        Error::MissingSource { role, name, .. } => match name {
            None => format!("pass {} NAME", source_flag(*role)),
            Some(_) => format!("pass a {} the store has", source_flag(*role)),
        },
        Error::NoEmbeddings { encoder: None } => "run `emoknow embed --encoder DIR` first".into(),
        Error::NoEmbeddings { encoder: Some(_) } => {
            "check --encoder, or run `emoknow embed --encoder DIR` first".into()
        }
        Error::EncoderGone { .. } => {
            "`emoknow embed --encoder DIR` with the encoder's new directory records it (nothing is re-embedded)".into()
        }
        Error::AmbiguousEncoder { key: None, .. } => {
            "pass --encoder with one of them (an id, id prefix or name)".into()
        }
        Error::AmbiguousEncoder { key: Some(_), .. } => {
            "pass a longer --encoder id prefix".into()
        }
        Error::MissingVector { split, .. } => {
            format!("run `emoknow embed --split {split}` (with the encoder's --encoder DIR)")
        }
        Error::EmptySplit { split, .. } if *split == Split::Train.name() => {
            "check --only-with-knowledge".into()
        }
        Error::EmptySplit { split, .. } if *split == Split::Val.name() => {
            "ingest with --val-fraction above 0".into()
        }
        Error::Setting { name, .. } => format!("change {}", flag_of(name)?),
        Error::OutPath { reason, .. } => match reason {
            OutPathReason::Encoder { .. } => {
                "--out would replace --encoder-dir: choose another --out".into()
            }
            OutPathReason::Member { member, overlap } => format!(
                "--out {overlap} --member {}: choose another --out",
                member.display()
            ),
            _ => "choose another --out".into(),
        },
        Error::ExportExists { .. } => "pass --replace to overwrite it, or another --out".into(),
        Error::TooFewMembers { .. } => "pass at least two --member DIR".into(),
        Error::DuplicateMember { .. } => "give each --member once".into(),
        Error::ModelDamaged { dir, .. } => {
            format!("retrain it: `emoknow train … --out {}`", dir.display())
        }
        Error::LlmWaitTooLong {
            wait_secs,
            max_wait_secs,
            ..
        } => format!(
            "{wait_secs:.0} s is longer than --max-wait {max_wait_secs:.0} s: rerun later, or raise --max-wait"
        ),
        Error::ApiKeyUnset { .. } => {
            "export it, or name another variable with --api-key-env".into()
        }
        Error::ApiKeyMissing { .. } => {
            "export DASHSCOPE_API_KEY=… (or name the variable holding the key with --api-key-env); a server on this machine (localhost, 127.0.0.1) needs no key".into()
        }
        Error::Llm {
            status: Some(status),
            retryable: false,
            ..
        } => match status {
            401 => "name the variable holding the key with --api-key-env".into(),
            403 => "check --model".into(),
            404 => "check --endpoint and --model".into(),
            408 | 425 | 429 => return None,
            400..=499 => "check --model and --temperature".into(),
            _ => return None,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_hint_is_found_under_context_and_names_the_flag() {
        let err = anyhow::Error::from(Error::TooFewMembers { given: 1 }).context("training");
        assert_eq!(
            hint(&err).as_deref(),
            Some("pass at least two --member DIR")
        );
        let err = anyhow::Error::from(Error::IdConflicts {
            path: PathBuf::from("f.csv"),
            errors: vec![(2, "ID 1 already used at line 1 of this file".into())],
            replaceable: false,
        });
        assert_eq!(hint(&err), None, "--replace does not help");
        let err = anyhow::Error::from(Error::Setting {
            name: "rpm",
            msg: "x".into(),
        });
        assert_eq!(hint(&err).as_deref(), Some("change --rpm"));
        assert_eq!(hint(&anyhow::anyhow!("plain")), None);
    }
}
