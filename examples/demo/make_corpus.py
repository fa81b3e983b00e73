"""Generate the demo corpus: three related slices of one (synthetic) language.

Run once; the output is committed so nothing is generated or downloaded at run
time. Each slice is narrower than the last, which makes a staged fine-tune a
meaningful experiment:

1. `general`: Norwegian-like sentences in both written standards (Bokmål and Nynorsk forms mixed),
2. `bokmal`: Bokmål forms only,
3. `dialect`: Bokmål with one dialect's word forms (Trøndersk-like: "æ", "itj", "ka").

Each slice gets a train and a held-out split. Usage: python examples/demo/make_corpus.py
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).parent

SUBJECTS = ["jeg", "du", "han", "hun", "vi", "dere", "de", "mora mi", "faren min", "naboen", "læreren", "venninna mi"]
VERBS = ["liker", "ser", "kjøper", "leser", "spiser", "lager", "finner", "husker", "hater", "vil ha"]
OBJECTS = ["fisk", "brød", "boka", "bilen", "kaffe", "vaflene", "båten", "huset", "snøen", "fjellet", "avisa", "skiene"]
PLACES = ["på hytta", "i byen", "ved sjøen", "på fjellet", "hjemme", "på skolen", "i butikken", "på kaia"]
TIMES = ["i dag", "i går", "i morgen", "om kvelden", "hver dag", "nå", "om vinteren", "på søndag"]
ADJ = ["fin", "kald", "stor", "god", "rar", "gammel", "ny", "lang"]
QUESTION_WORDS = ["hva", "hvor", "hvorfor", "når"]

# Bokmål form -> Nynorsk form (the general slice mixes both standards).
NYNORSK = {
    "jeg": "eg",
    "ikke": "ikkje",
    "hva": "kva",
    "hvor": "kvar",
    "hvorfor": "kvifor",
    "hun": "ho",
    "hjemme": "heime",
    "også": "òg",
    "noen": "nokon",
    "bare": "berre",
    "mye": "mykje",
    "kjøper": "kjøper",
    "dere": "de",
    "de": "dei",
    "er": "er",
    "vil": "vil",
    "boka": "boka",
}
# Bokmål form -> Trøndersk-like dialect form (the narrowest slice).
DIALECT = {
    "jeg": "æ",
    "ikke": "itj",
    "hva": "ka",
    "hvor": "kor",
    "hvorfor": "kvifor",
    "hun": "ho",
    "han": "hainn",
    "er": "e",
    "meg": "mæ",
    "deg": "dæ",
    "hjemme": "heime",
    "bare": "bærre",
    "mye": "møkje",
    "noen": "nån",
    "vi": "vi",
    "de": "dem",
    "dere": "dokker",
    "også": "ogsål",
}


def sentence(rng: random.Random) -> str:
    """One Bokmål sentence from a small grammar; the slices rewrite its words."""
    kind = rng.random()
    s, v, o = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
    if kind < 0.35:
        return f"{s} {v} {o} {rng.choice(PLACES)} {rng.choice(TIMES)} ."
    if kind < 0.55:
        return f"{s} {v} ikke {o} , men {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} ."
    if kind < 0.75:
        return f"{rng.choice(QUESTION_WORDS)} {v} {s} {o} {rng.choice(TIMES)} ?"
    if kind < 0.9:
        return f"{o} er {rng.choice(ADJ)} , sier {s} , og {s} er {rng.choice(PLACES)} også ."
    return f"{s} har bare mye {o} {rng.choice(PLACES)} , men ikke noen {rng.choice(OBJECTS)} ."


def rewrite(text: str, table: dict[str, str]) -> str:
    return " ".join(table.get(word, word) for word in text.split())


def slice_lines(name: str, n: int, rng: random.Random) -> list[str]:
    lines = []
    for _ in range(n):
        text = sentence(rng)
        if name == "general" and rng.random() < 0.5:
            text = rewrite(text, NYNORSK)
        elif name == "dialect":
            text = rewrite(text, DIALECT)
        lines.append(text[0].upper() + text[1:])
    return lines


def write_corpus(out_dir: Path, seed: int = 1234) -> None:
    sizes = {"general": (3000, 300), "bokmal": (1200, 150), "dialect": (500, 100)}
    for i, (name, (n_train, n_eval)) in enumerate(sizes.items()):
        rng = random.Random(seed + i)
        lines = slice_lines(name, n_train + n_eval, rng)
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train.txt").write_text("\n".join(lines[:n_train]) + "\n")
        (folder / "eval.txt").write_text("\n".join(lines[n_train:]) + "\n")


def train_tokenizer(data_dir: Path, out_file: Path, vocab_size: int = 384) -> None:
    """A small BPE tokenizer trained on all three slices' training text (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<unk>", "<s>", "</s>"], show_progress=False
    )
    files = sorted(str(p) for p in data_dir.glob("*/train.txt"))
    tok.train(files, trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    out_file.write_text(tok.to_str(pretty=False))


if __name__ == "__main__":
    write_corpus(HERE / "data")
    train_tokenizer(HERE / "data", HERE / "tokenizer.json")
    print("wrote", HERE / "data", "and", HERE / "tokenizer.json")
