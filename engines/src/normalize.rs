//! Text normalisation before phonemisation: abbreviations (so "Dr." does not end a
//! sentence), currency, percentages, ordinals, decimals, large numbers and symbols spelled
//! out the way a reader would say them. Pure logic.

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

const ABBREVIATIONS: &[(&str, &str)] = &[
    ("Dr.", "Doctor"),
    ("Mr.", "Mister"),
    ("Mrs.", "Missus"),
    ("Ms.", "Miz"),
    ("Prof.", "Professor"),
    ("St.", "Saint"),
    ("Jr.", "Junior"),
    ("Sr.", "Senior"),
    ("vs.", "versus"),
    ("etc.", "et cetera"),
    ("e.g.", "for example"),
    ("i.e.", "that is"),
    ("approx.", "approximately"),
    ("No.", "number"),
];

const SYMBOLS: &[(char, &str)] = &[
    ('&', "and"),
    ('+', "plus"),
    ('=', "equals"),
    ('@', "at"),
    ('%', "percent"),
    ('#', "number"),
];

/// Cardinal number in words (up to the trillions).
pub fn cardinal(n: u64) -> String {
    fn below_thousand(n: u64) -> String {
        let (hundreds, rest) = (n / 100, n % 100);
        let mut words = Vec::new();
        if hundreds > 0 {
            words.push(format!("{} hundred", ONES[hundreds as usize]));
        }
        if rest > 0 || hundreds == 0 {
            words.push(if rest < 20 {
                ONES[rest as usize].to_owned()
            } else if rest % 10 == 0 {
                TENS[(rest / 10) as usize].to_owned()
            } else {
                format!(
                    "{}-{}",
                    TENS[(rest / 10) as usize],
                    ONES[(rest % 10) as usize]
                )
            });
        }
        words.join(" ")
    }
    if n < 1000 {
        return below_thousand(n);
    }
    let mut parts = Vec::new();
    let mut rest = n;
    for (scale, name) in [
        (1_000_000_000_000, "trillion"),
        (1_000_000_000, "billion"),
        (1_000_000, "million"),
        (1_000, "thousand"),
    ] {
        if rest >= scale {
            parts.push(format!("{} {name}", cardinal(rest / scale)));
            rest %= scale;
        }
    }
    if rest > 0 {
        parts.push(below_thousand(rest));
    }
    parts.join(" ")
}

fn ordinal(n: u64) -> String {
    let words = cardinal(n);
    let irregular = [
        ("one", "first"),
        ("two", "second"),
        ("three", "third"),
        ("five", "fifth"),
        ("eight", "eighth"),
        ("nine", "ninth"),
        ("twelve", "twelfth"),
    ];
    for (plain, ord) in irregular {
        if let Some(stem) = words.strip_suffix(plain) {
            return format!("{stem}{ord}");
        }
    }
    match words.strip_suffix('y') {
        Some(stem) => format!("{stem}ieth"),
        None => format!("{words}th"),
    }
}

/// A standalone 4-digit number from 1100 to 1999 reads as a year ("nineteen ninety").
fn year(n: u64) -> Option<String> {
    if !(1100..=1999).contains(&n) {
        return None;
    }
    let (century, rest) = (n / 100, n % 100);
    Some(match rest {
        0 => format!("{} hundred", cardinal(century)),
        1..=9 => format!("{} oh {}", cardinal(century), cardinal(rest)),
        _ => format!("{} {}", cardinal(century), cardinal(rest)),
    })
}

/// Spells out one token of digits (with optional `,` grouping, decimals, ordinal suffix).
fn number_token(token: &str) -> Option<String> {
    let lower = token.to_ascii_lowercase();
    for suffix in ["st", "nd", "rd", "th"] {
        if let Some(digits) = lower.strip_suffix(suffix)
            && !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
        {
            return digits.parse().ok().map(ordinal);
        }
    }
    let plain = token.replace(',', "");
    let (whole, fraction) = match plain.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (plain.as_str(), None),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || whole.len() > 15 {
        return None;
    }
    let value: u64 = whole.parse().ok()?;
    let mut words = match (fraction, token.contains(',')) {
        (None, false) if whole.len() == 4 => year(value).unwrap_or_else(|| cardinal(value)),
        _ => cardinal(value),
    };
    if let Some(fraction) = fraction {
        if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        words.push_str(" point");
        for digit in fraction.bytes() {
            words.push(' ');
            words.push_str(ONES[usize::from(digit - b'0')]);
        }
    }
    Some(words)
}

fn currency(symbol: char, amount: &str) -> Option<String> {
    let (unit, units, cent) = match symbol {
        '$' => ("dollar", "dollars", "cents"),
        '€' => ("euro", "euros", "cents"),
        '£' => ("pound", "pounds", "pence"),
        _ => return None,
    };
    let plain = amount.replace(',', "");
    let (whole, fraction) = plain.split_once('.').unwrap_or((&plain, ""));
    let value: u64 = whole.parse().ok()?;
    let mut words = format!(
        "{} {}",
        cardinal(value),
        if value == 1 { unit } else { units }
    );
    if fraction.len() == 2 && fraction.bytes().all(|b| b.is_ascii_digit()) {
        let cents: u64 = fraction.parse().ok()?;
        if cents > 0 {
            words.push_str(&format!(" {} {cent}", cardinal(cents)));
        }
    }
    Some(words)
}

/// Normalises text for speech.
pub fn normalize(text: &str) -> String {
    let mut out = Vec::new();
    for raw in text.split_whitespace() {
        if let Some((_, spoken)) = ABBREVIATIONS
            .iter()
            .find(|(abbreviation, _)| *abbreviation == raw)
        {
            out.push((*spoken).to_owned());
            continue;
        }
        // Split off leading/trailing punctuation that stays as is.
        let start = raw
            .find(|c: char| c.is_alphanumeric() || "$€£".contains(c))
            .unwrap_or(raw.len());
        let end = raw
            .rfind(|c: char| c.is_alphanumeric() || c == '%')
            .map_or(start, |i| {
                i + raw[i..].chars().next().map_or(1, char::len_utf8)
            });
        let (prefix, core, suffix) = if start == raw.len() {
            // No letters or digits: a bare symbol such as `&`.
            ("", raw, "")
        } else {
            (
                &raw[..start],
                &raw[start..end.max(start)],
                &raw[end.max(start)..],
            )
        };
        let mut spoken = None;
        if let Some(first) = core.chars().next()
            && "$€£".contains(first)
        {
            spoken = currency(first, &core[first.len_utf8()..]);
        }
        if spoken.is_none()
            && let Some(number) = core.strip_suffix('%')
        {
            spoken = number_token(number).map(|n| format!("{n} percent"));
        }
        if spoken.is_none() {
            spoken = number_token(core);
        }
        let core = spoken.unwrap_or_else(|| {
            core.chars()
                .map(|c| match SYMBOLS.iter().find(|(s, _)| *s == c) {
                    Some((_, word)) => format!(" {word} "),
                    None => c.to_string(),
                })
                .collect::<String>()
        });
        out.push(format!("{prefix}{}{suffix}", core.trim()));
    }
    out.join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(cardinal(0), "zero");
        assert_eq!(cardinal(42), "forty-two");
        assert_eq!(
            cardinal(1_234_567),
            "one million two hundred thirty-four thousand five hundred sixty-seven"
        );
        assert_eq!(ordinal(21), "twenty-first");
        assert_eq!(ordinal(40), "fortieth");
        assert_eq!(ordinal(12), "twelfth");
        assert_eq!(
            normalize("In 1999 we sold 2,500 units, 3.25 each."),
            "In nineteen ninety-nine we sold two thousand five hundred units, three point two five each."
        );
        assert_eq!(
            normalize("She came 2nd of 2024 runners"),
            "She came second of two thousand twenty-four runners"
        );
    }

    #[test]
    fn currency_percent_symbols_abbreviations() {
        assert_eq!(
            normalize("It costs $3.50 (or €1)."),
            "It costs three dollars fifty cents (or one euro)."
        );
        assert_eq!(
            normalize("Growth was 15% in Q3"),
            "Growth was fifteen percent in Q3"
        );
        assert_eq!(
            normalize("Dr. Smith & Mr. Jones met at St. Paul's, e.g. today."),
            "Doctor Smith and Mister Jones met at Saint Paul's, for example today."
        );
        assert_eq!(normalize("a+b = c"), "a plus b equals c");
        assert_eq!(normalize("  plain   words  "), "plain words");
    }
}
