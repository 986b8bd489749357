"""Captions from (content, style) labels: natural English paraphrases, HumanML3D token strings, and
the left/right swap used by mirror augmentation.

Every caption is `TEMPLATES[k]` filled with a subject, a verb phrase of the content and a word or
phrase of the style. "left"/"right" always mean the performer's own side. Because we write the
words ourselves, each word's lemma and part of speech come from our own lexicon (`LEXICON`), so the
`word/POS` tokens of HumanML3D's text files need no tagger model; a word missing from it is a bug
that tests/test_captions.py catches for every template, content and style.

Mirroring: `mirror_content("wave-left-hand") == "wave-right-hand"`, and the captions of a mirrored
clip are made from the mirrored content, so joints and words swap together; `swap_left_right`
does the same for any free text.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from easytune.errors import UserError

# --- content: verb phrases (third person), written for the performer's LEFT where sided ---------

_CONTENT_LEFT: dict[str, list[str]] = {
    "walk": ["walks forward", "walks straight ahead", "takes a few steps forward"],
    "run": ["runs forward", "jogs straight ahead", "runs ahead"],
    "dash": ["dashes forward", "sprints ahead", "runs forward at full speed"],
    "walk-back": ["walks backwards", "steps backwards", "walks back without turning around"],
    "walk-left": ["walks forward and to the left", "walks diagonally to their left",
                  "walks ahead while drifting to the left"],
    "walk-turn-left": ["walks and turns left", "walks forward and turns to the left",
                       "makes a left turn while walking"],
    "bow": ["bows", "bends forward in a bow", "bows from the waist"],
    "bye": ["waves goodbye", "says goodbye with a wave", "raises a hand to say goodbye"],
    "byebye": ["waves bye bye", "keeps waving goodbye", "waves goodbye again and again"],
    "guide": ["gestures to show the way", "guides someone with an open hand", "points the way with an arm"],
    "respond": ["responds to someone", "answers with a gesture", "reacts to someone with a gesture"],
    "call": ["calls out to someone", "beckons someone over", "calls someone with a wave"],
    "punch": ["throws a punch", "punches forward", "punches the air"],
    "kick": ["kicks", "kicks forward", "does a kick"],
    "slash": ["slashes with a sword", "swings a blade", "makes a slashing attack"],
    "dance-long": ["dances", "performs a long dance", "dances for a while"],
    "dance-short": ["dances", "performs a short dance", "does a quick dance"],
    "wave-both-hands": ["waves both hands", "waves with both arms", "waves both hands in the air"],
    "wave-left-hand": ["waves their left hand", "waves with the left hand", "raises the left hand and waves"],
    "raise-up-both-hands": ["raises both hands", "lifts both arms up", "puts both hands up in the air"],
    "raise-up-left-hand": ["raises their left hand", "lifts the left arm up", "puts the left hand up"],
}

_LR = re.compile(r"\b(left|right)\b")


def swap_left_right(text: str) -> str:
    """Swap the words "left" and "right" (whole words, also inside hyphenated labels)."""
    return _LR.sub(lambda m: "right" if m.group(1) == "left" else "left", text)


def mirror_content(content: str) -> str:
    """The content label of the mirrored clip: walk-left <-> walk-right, wave-left-hand <->
    wave-right-hand, ...; labels without a side map to themselves."""
    return swap_left_right(content)


CONTENT_PHRASES: dict[str, list[str]] = dict(_CONTENT_LEFT)
for _c, _ps in _CONTENT_LEFT.items():
    if _LR.search(_c):
        CONTENT_PHRASES[mirror_content(_c)] = [swap_left_right(p) for p in _ps]
del _c, _ps

# --- style: adjectives (after "a"/"the"/"someone") and adverbial phrases ------------------------

STYLE_WORDS: dict[str, tuple[list[str], list[str]]] = {
    "normal": (["calm", "relaxed"], ["calmly", "in a relaxed way"]),
    "happy": (["happy", "cheerful"], ["happily", "cheerfully"]),
    "sad": (["sad", "gloomy"], ["sadly", "gloomily"]),
    "angry": (["angry", "furious"], ["angrily", "furiously"]),
    "proud": (["proud", "haughty"], ["proudly", "with pride"]),
    "not-confident": (["timid", "unsure"], ["timidly", "hesitantly"]),
    "masculine": (["masculine", "manly"], ["in a masculine way", "in a manly way"]),
    "feminine": (["feminine", "graceful"], ["in a feminine way", "gracefully"]),
    "childish": (["childish", "playful"], ["like a child", "playfully"]),
    "elderly": (["elderly", "old"], ["like an elderly person", "stiffly"]),
    "tired": (["tired", "exhausted"], ["wearily", "tiredly"]),
    "active": (["energetic", "lively"], ["energetically", "vigorously"]),
    "musical": (["theatrical", "showy"], ["theatrically", "like in a musical"]),
    "giant": (["giant", "huge"], ["heavily", "like a giant"]),
    "chimpira": (["swaggering", "cocky"], ["with a swagger", "like a street punk"]),
    "youthful": (["youthful", "young"], ["youthfully", "with youthful energy"]),
}

SUBJECTS = ["a person", "someone", "the person"]

# Templates: {subj} a subject, {vp} verb phrase, {adj} style adjective, {adv} style adverb,
# {a_adj} "a"/"an" + adjective. The ids are stable: datasets hold some of them out (see build.py).
TEMPLATES: list[str] = [
    "{a_adj} person {vp}",                  # 0  a happy person waves their left hand
    "{subj} {vp} {adv}",                    # 1  someone waves their left hand cheerfully
    "someone {adj} {vp}",                   # 2  someone tired walks backwards
    "{subj} who is {adj} {vp}",             # 3  a person who is sad bows
    "the {adj} person {vp}",                # 4  the proud person runs forward
    "{adv} , {subj} {vp}",                  # 5  wearily, someone walks forward
    "{subj} {vp} , looking {adj}",          # 6  a person kicks, looking angry
    "{a_adj} figure {vp} {adv}",            # 7  an elderly figure raises both hands stiffly
]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def render(template: int, content: str, style: str, subject: int = 0, phrase: int = 0,
           adjective: int = 0, adverb: int = 0) -> str:
    """One caption, lower case, words and commas separated by single spaces ("x , y")."""
    if content not in CONTENT_PHRASES:
        raise UserError(f"no captions for content {content!r}; known contents: {sorted(CONTENT_PHRASES)}")
    if style not in STYLE_WORDS:
        raise UserError(f"no captions for style {style!r}; known styles: {sorted(STYLE_WORDS)}")
    adjs, advs = STYLE_WORDS[style]
    phrases = CONTENT_PHRASES[content]
    adj = adjs[adjective % len(adjs)]
    text = TEMPLATES[template].format(subj=SUBJECTS[subject % len(SUBJECTS)], vp=phrases[phrase % len(phrases)],
                                      adj=adj, adv=advs[adverb % len(advs)], a_adj=f"{_article(adj)} {adj}")
    return " ".join(text.split())


def pretty(caption: str) -> str:
    """Caption as shown to people: "wearily , someone ..." -> "Wearily, someone ..."."""
    text = caption.replace(" ,", ",")
    return text[:1].upper() + text[1:]


def sample_captions(content: str, style: str, templates: list[int], n: int, seed: int | str) -> list[tuple[int, str]]:
    """`n` distinct (template id, caption) pairs using only `templates`, chosen reproducibly from
    `seed` (an int or a string such as the motion's name)."""
    if isinstance(seed, str):
        seed = zlib.crc32(seed.encode())
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(templates))
    out: list[tuple[int, str]] = []
    seen: set[str] = set()
    for k in range(n * 4):
        t = templates[order[k % len(order)]]
        cap = render(t, content, style, *rng.integers(0, 6, size=4).tolist())
        if cap not in seen:
            seen.add(cap)
            out.append((t, cap))
        if len(out) == n:
            break
    return out


# --- tokens: word/POS pairs as in HumanML3D's texts (lemma + Universal POS tag) ----------------

_POS_WORDS = {
    "DET": "a an the both",
    "PRON": "someone their who",
    "NOUN": "person figure hand hands arm arms step steps way left right air sword blade attack "
            "punch kick dance wave bow goodbye bye child giant punk street musical pride "
            "swagger energy gesture speed turn waist",
    "VERB": "walks runs jogs dashes sprints takes steps turns makes bows bends says raises waves "
            "keeps gestures show guides points responds answers reacts calls beckons throws punches "
            "kicks does slashes swings performs dances lifts puts is looking turning drifting say walking waving",
    "ADJ": "calm relaxed happy cheerful sad gloomy angry furious proud haughty timid unsure masculine "
           "manly feminine graceful childish playful elderly old tired exhausted energetic lively "
           "theatrical showy giant huge swaggering cocky youthful young open few full long short "
           "quick slashing",
    "ADV": "forward straight ahead backwards back diagonally around without again up over out "
           "calmly happily cheerfully sadly gloomily angrily furiously proudly timidly hesitantly "
           "gracefully playfully stiffly wearily tiredly energetically vigorously theatrically "
           "heavily youthfully",
    "ADP": "to at with in of like for from",
    "CCONJ": "and",
    "SCONJ": "while",
}
_LEMMAS = {
    "walks": "walk", "runs": "run", "jogs": "jog", "dashes": "dash", "sprints": "sprint", "takes": "take",
    "steps": "step", "turns": "turn", "makes": "make", "bows": "bow", "bends": "bend", "says": "say",
    "raises": "raise", "waves": "wave", "keeps": "keep", "gestures": "gesture", "guides": "guide",
    "points": "point", "responds": "respond", "answers": "answer", "reacts": "react", "calls": "call",
    "beckons": "beckon", "throws": "throw", "punches": "punch", "kicks": "kick", "does": "do",
    "slashes": "slash", "swings": "swing", "performs": "perform", "dances": "dance", "lifts": "lift",
    "puts": "put", "is": "be", "looking": "look", "turning": "turn", "drifting": "drift", "walking": "walk", "waving": "wave", "hands": "hand",
    "arms": "arm", "their": "their", "an": "a",
}
# A few words change tag with their neighbour; (previous word, word) -> POS.
_POS_IN_CONTEXT = {("a", "wave"): "NOUN", ("a", "bow"): "NOUN", ("a", "kick"): "NOUN", ("a", "punch"): "NOUN",
                   ("a", "while"): "NOUN", ("their", "left"): "ADJ", ("their", "right"): "ADJ", ("the", "way"): "NOUN",
                   ("and", "turns"): "VERB", ("to", "show"): "VERB",
                   ("a", "few"): "ADJ", ("a", "giant"): "NOUN", ("a", "child"): "NOUN",
                   ("in", "a"): "DET", ("at", "full"): "ADJ", ("a", "swagger"): "NOUN",
                   ("bye", "bye"): "NOUN",
                   ("waves", "bye"): "NOUN", ("a", "musical"): "NOUN", ("a", "street"): "NOUN",
                   ("goodbye", "again"): "ADV", ("hand", "up"): "ADP"}
LEXICON: dict[str, str] = {w: pos for pos, words in _POS_WORDS.items() for w in words.split()}
_SIDED_NOUNS = {"hand", "hands", "arm", "arms", "turn", "side"}


def _side_pos(prev: str, nxt: str) -> str:
    """left/right: adjective before a body part ("their left hand"), noun after a determiner
    ("to the left"), adverb otherwise ("turns left")."""
    if nxt in _SIDED_NOUNS:
        return "ADJ"
    return "NOUN" if prev in ("the", "their") else "ADV"


def tokens(caption: str) -> str:
    """HumanML3D token string for one of our captions: 'a/DET person/NOUN wave/VERB ...'
    (lemma/POS per word, punctuation dropped). A word outside `LEXICON` raises KeyError."""
    words = [w for w in caption.lower().split() if w not in (",", ".")]
    out = []
    prev = ""
    for i, w in enumerate(words):
        if w in ("left", "right"):
            pos = _side_pos(prev, words[i + 1] if i + 1 < len(words) else "")
        else:
            pos = _POS_IN_CONTEXT.get((prev, w), LEXICON[w])
        out.append(f"{_LEMMAS.get(w, w)}/{pos}")
        prev = w
    return " ".join(out)


def text_line(caption: str, start: float = 0.0, end: float = 0.0) -> str:
    """One line of a HumanML3D texts/ file: 'caption#tokens#start#end' (0.0/0.0 = whole clip)."""
    return f"{caption.replace(' ,', ',')}#{tokens(caption)}#{start}#{end}"


def parse_text_line(line: str) -> tuple[str, str, float, float]:
    """Inverse of `text_line` for any HumanML3D texts line: (caption, tokens, start, end)."""
    parts = line.rstrip("\n").split("#")
    if len(parts) < 4:
        raise UserError(f"text line {line!r} is not 'caption#tokens#start#end'.")
    try:
        start, end = float(parts[-2] or 0.0), float(parts[-1] or 0.0)
    except ValueError:
        raise UserError(f"text line {line!r} has a non-numeric start or end time.") from None
    start = 0.0 if np.isnan(start) else start
    end = 0.0 if np.isnan(end) else end
    return "#".join(parts[:-3]), parts[-3], start, end
