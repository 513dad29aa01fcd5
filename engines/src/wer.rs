//! Word error rate, for tests and benches: texts are compared after lower-casing and
//! dropping punctuation (apostrophes inside words are kept), by word-level edit
//! distance over the reference's length.

/// Lower-cased words without punctuation.
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|word| {
            word.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .flat_map(char::to_lowercase)
                .collect::<String>()
                .trim_matches('\'')
                .to_owned()
        })
        .filter(|word| !word.is_empty())
        .collect()
}

/// (substitutions + deletions + insertions) / reference words; 0 for two empty texts.
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let (r, h) = (words(reference), words(hypothesis));
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { 1.0 };
    }
    let mut previous: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut current = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let substitution = previous[j] + usize::from(rw != hw);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[h.len()] as f64 / r.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_and_case_do_not_count_edits_do() {
        assert_eq!(
            wer("Ever tried. Ever failed.", "ever tried, ever failed"),
            0.0
        );
        assert_eq!(wer("a b c d", "a x c"), 0.5); // one substitution, one deletion
        assert_eq!(wer("a b", "a b c d"), 1.0); // two insertions
        assert_eq!(words("Don't STOP!"), vec!["don't", "stop"]);
        assert_eq!(wer("", ""), 0.0);
    }
}
