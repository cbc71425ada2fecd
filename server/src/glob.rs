//! Redis's glob matching (`stringmatchlen`) for KEYS, SCAN MATCH and
//! CONFIG GET: `*`, `?`, `[abc]`, `[^a-z]`, `\x`.

/// Whether `s` matches `pattern`.
///
/// Every token but `*` matches exactly one byte, so a failed attempt only
/// ever needs to resume at the latest `*`, letting it take one byte more:
/// at most `(pattern.len() + 1) * (s.len() + 1)` steps. (Trying every
/// split at every star instead is exponential in the number of stars: a
/// pattern like `*a*a*a*a*a*a*a*a*b` against a long run of `a`s would keep
/// a server thread busy for ever, the problem behind Redis's
/// CVE-2022-36021.)
pub fn matches(pattern: &[u8], s: &[u8]) -> bool {
    matches_counting(pattern, s, &mut 0)
}

/// [`matches`], adding the number of steps taken to `steps`.
fn matches_counting(p: &[u8], s: &[u8], steps: &mut u64) -> bool {
    let (mut pi, mut si) = (0, 0);
    // Where the pattern resumes after the latest star, and the byte that
    // star's match ends before.
    let mut star: Option<(usize, usize)> = None;
    loop {
        *steps += 1;
        if pi < p.len() && p[pi] == b'*' {
            while pi < p.len() && p[pi] == b'*' {
                pi += 1;
            }
            if pi == p.len() {
                return true;
            }
            star = Some((pi, si));
            continue;
        }
        if pi == p.len() {
            if si == s.len() {
                return true;
            }
        } else if let Some(next) = s.get(si).and_then(|&c| one(p, pi, c)) {
            pi = next;
            si += 1;
            continue;
        }
        match star {
            Some((sp, ss)) if ss < s.len() => {
                star = Some((sp, ss + 1));
                pi = sp;
                si = ss + 1;
            }
            _ => return false,
        }
    }
}

/// If the token at `p[i]` (not a star) matches byte `c`, where the
/// pattern goes on after it: `?` matches any byte; `[abc]`, `[^a-z]`
/// (a range's ends in either order, `\x` inside for a literal; a class
/// left open takes the rest of the pattern) a byte of the class; `\x`
/// the byte x (a backslash at the very end, itself); any other byte
/// itself.
fn one(p: &[u8], i: usize, c: u8) -> Option<usize> {
    match p[i] {
        b'?' => Some(i + 1),
        b'[' => {
            let mut j = i + 1;
            let not = p.get(j) == Some(&b'^');
            if not {
                j += 1;
            }
            let mut hit = false;
            while j < p.len() && p[j] != b']' {
                if p[j] == b'\\' && j + 1 < p.len() {
                    hit |= p[j + 1] == c;
                    j += 2;
                } else if j + 2 < p.len() && p[j + 1] == b'-' {
                    let (lo, hi) = (p[j].min(p[j + 2]), p[j].max(p[j + 2]));
                    hit |= (lo..=hi).contains(&c);
                    j += 3;
                } else {
                    hit |= p[j] == c;
                    j += 1;
                }
            }
            (hit != not).then_some((j + 1).min(p.len()))
        }
        b'\\' if i + 1 < p.len() => (p[i + 1] == c).then_some(i + 2),
        b => (b == c).then_some(i + 1),
    }
}

/// The literal bytes a pattern's matches must all start with (up to its
/// first special character), to narrow a scan to a prefix.
pub fn literal_prefix(pattern: &[u8]) -> &[u8] {
    let end = pattern.iter().position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\')).unwrap_or(pattern.len());
    &pattern[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(matches(b"*", b""));
        assert!(matches(b"*", b"abc"));
        assert!(matches(b"h?llo", b"hello"));
        assert!(!matches(b"h?llo", b"hllo"));
        assert!(matches(b"h*llo", b"heeeello"));
        assert!(matches(b"h[ae]llo", b"hallo"));
        assert!(!matches(b"h[ae]llo", b"hillo"));
        assert!(matches(b"h[^e]llo", b"hallo"));
        assert!(!matches(b"h[^e]llo", b"hello"));
        assert!(matches(b"h[a-b]llo", b"hbllo"));
        assert!(matches(b"h[b-a]llo", b"hallo"));
        assert!(matches(b"a\\*b", b"a*b"));
        assert!(!matches(b"a\\*b", b"axb"));
        assert!(matches(b"key:*:x", b"key:12:x"));
        assert!(!matches(b"key:*:x", b"key:12:y"));
        assert!(!matches(b"abc", b"abcd"));
        assert!(matches(&[b'*'; 5000], b"a"));
        assert_eq!(literal_prefix(b"user:*"), b"user:");
        assert_eq!(literal_prefix(b"abc"), b"abc");
        assert_eq!(literal_prefix(b"a\\*"), b"a");
    }

    /// The recursive matcher this module used before: every split at every
    /// star (exponential in the stars), kept as the reference.
    fn reference(p: &[u8], s: &[u8], depth: usize) -> bool {
        // Redis bounds the recursion the same way (a pattern of many stars).
        if depth > 1000 {
            return false;
        }
        let (mut p, mut s) = (p, s);
        while !p.is_empty() {
            match p[0] {
                b'*' => {
                    while p.len() > 1 && p[1] == b'*' {
                        p = &p[1..];
                    }
                    if p.len() == 1 {
                        return true;
                    }
                    for i in 0..=s.len() {
                        if reference(&p[1..], &s[i..], depth + 1) {
                            return true;
                        }
                    }
                    return false;
                }
                b'?' => {
                    if s.is_empty() {
                        return false;
                    }
                    s = &s[1..];
                }
                b'[' => {
                    if s.is_empty() {
                        return false;
                    }
                    p = &p[1..];
                    let not = p.first() == Some(&b'^');
                    if not {
                        p = &p[1..];
                    }
                    let mut hit = false;
                    loop {
                        if p.is_empty() {
                            break;
                        }
                        if p[0] == b'\\' && p.len() >= 2 {
                            p = &p[1..];
                            hit |= p[0] == s[0];
                        } else if p[0] == b']' {
                            break;
                        } else if p.len() >= 3 && p[1] == b'-' {
                            let (mut lo, mut hi) = (p[0], p[2]);
                            if lo > hi {
                                std::mem::swap(&mut lo, &mut hi);
                            }
                            hit |= s[0] >= lo && s[0] <= hi;
                            p = &p[2..];
                        } else {
                            hit |= p[0] == s[0];
                        }
                        p = &p[1..];
                    }
                    if hit == not {
                        return false;
                    }
                    s = &s[1..];
                    if p.is_empty() {
                        // An unterminated class ends the pattern.
                        return s.is_empty();
                    }
                }
                b'\\' if p.len() >= 2 => {
                    p = &p[1..];
                    if s.first() != Some(&p[0]) {
                        return false;
                    }
                    s = &s[1..];
                }
                c => {
                    if s.first() != Some(&c) {
                        return false;
                    }
                    s = &s[1..];
                }
            }
            p = &p[1..];
        }
        s.is_empty()
    }

    /// The linear matcher agrees with the recursive one on random patterns
    /// over a small alphabet (stars, `?`, classes, ranges, negation,
    /// escapes, unterminated classes, a trailing backslash).
    #[test]
    fn agrees_with_the_recursive_matcher() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let atoms: [&[u8]; 12] =
            [b"*", b"*", b"?", b"a", b"b", b"[ab]", b"[^a]", b"[a-b]", b"[b-a", b"\\*", b"\\", b"["];
        for _ in 0..200_000 {
            let mut p = Vec::new();
            for _ in 0..rnd(7) {
                p.extend_from_slice(atoms[rnd(atoms.len() as u64) as usize]);
            }
            let s: Vec<u8> = (0..rnd(8)).map(|_| b"ab*[\\"[rnd(5) as usize]).collect();
            assert_eq!(
                matches(&p, &s),
                reference(&p, &s, 0),
                "{:?} on {:?}",
                String::from_utf8_lossy(&p),
                String::from_utf8_lossy(&s)
            );
        }
    }

    /// Many stars over a long key take at most one step per (pattern
    /// position, key position) pair; the recursive matcher would take
    /// about C(200, 30) calls here.
    #[test]
    fn many_stars_take_polynomial_steps() {
        let key = vec![b'a'; 200];
        let mut pat = b"*a".repeat(30);
        pat.extend_from_slice(b"*b");
        let mut steps = 0;
        assert!(!matches_counting(&pat, &key, &mut steps));
        let bound = (pat.len() as u64 + 1) * (key.len() as u64 + 1);
        assert!(steps <= bound, "{steps} steps, bound {bound}");
        pat.pop();
        pat.push(b'a');
        assert!(matches(&pat, &key));
    }
}
