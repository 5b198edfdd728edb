"""One speaker's lines held out of a play: the two corpora of a text fine-tuning experiment.

A play in the layout of Tiny Shakespeare is a sequence of speeches separated by blank lines, each opening with its
speaker's name alone on a line ending with ``:`` (``MENENIUS:``). :func:`split_by_speaker` puts one speaker's
speeches (name lines included, so the text keeps the play's shape) in one corpus and everyone else's in the other;
:func:`write_speaker_corpora` writes the two as text files for :class:`~genlit.data.text.TextDataModule`:

    python -m genlit.data.speakers $GENLIT_DATA_DIR/tinyshakespeare/input.txt --out runs/finetune/speakers
    # -> runs/finetune/speakers/speaker.txt (GLOUCESTER's speeches, the most frequent speaker by characters)
    #    runs/finetune/speakers/others.txt  (every other speech)

A language model pre-trained on ``others.txt`` and fine-tuned on ``speaker.txt`` has never seen the held-out
speaker's lines; ``TextDataModule`` holds out the end of each file for validation as it does for any text.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from genlit.files import atomic_write, cache_root

_BREAK = re.compile(r"\n[ \t]*\n")  # a blank line: the end of one speech
_NAME = re.compile(r"[^\s:][^:\n]{0,60}:")  # a speaker's name line: ``First Citizen:``, ``KING RICHARD III:``
SPEAKER_FILE, OTHERS_FILE = "speaker.txt", "others.txt"


def speeches(text: str) -> list[tuple[str | None, str]]:
    """The speeches of ``text``: ``(speaker, speech)`` in order, ``speech`` with its name line and without the blank
    lines around it; ``speaker`` is the name without its colon, None for a paragraph that opens with no name line."""
    found = []
    for block in _BREAK.split(text):
        speech = block.strip("\n")
        if not speech.strip():
            continue
        first = speech.split("\n", 1)[0].strip()
        found.append((first[:-1] if _NAME.fullmatch(first) else None, speech))
    return found


def speaker_sizes(text: str) -> Counter:
    """Characters spoken by each speaker of ``text`` (their speeches, name lines included)."""
    sizes: Counter = Counter()
    for speaker, speech in speeches(text):
        if speaker is not None:
            sizes[speaker] += len(speech)
    return sizes


def most_frequent_speaker(text: str) -> str:
    """The speaker of ``text`` with the most characters (the first of them in order of appearance on a tie)."""
    sizes = speaker_sizes(text)
    if not sizes:
        raise ValueError("the text has no speeches opening with a name line such as 'MENENIUS:'")
    return max(sizes, key=lambda name: (sizes[name], -list(sizes).index(name)))


def split_by_speaker(text: str, speaker: str) -> tuple[str, str]:
    """``(speaker's speeches, everyone else's)`` of ``text``, each joined by blank lines and ending with a newline.
    ``speaker`` is a name as it stands on its line, without the colon (``MENENIUS``); one clear error naming the most
    frequent speakers when it speaks nowhere."""
    own, others = [], []
    for name, speech in speeches(text):
        (own if name == speaker else others).append(speech)
    if not own:
        common = ", ".join(name for name, _ in speaker_sizes(text).most_common(5))
        raise ValueError(f"speaker {speaker!r} has no speech in the text; the most frequent speakers: {common}")
    return "\n\n".join(own) + "\n", "\n\n".join(others) + "\n"


@dataclass(frozen=True)
class SpeakerCorpora:
    """What :func:`write_speaker_corpora` wrote: the speaker held out and the two text files."""

    speaker: str
    speaker_path: Path
    others_path: Path


def write_speaker_corpora(
    source: str | os.PathLike, speaker: str | None = None, folder: str | os.PathLike | None = None
) -> SpeakerCorpora:
    """Write :func:`split_by_speaker` of the text file ``source`` as ``folder/speaker.txt`` and ``folder/others.txt``
    (atomically, each replaced only when its text changed). ``speaker`` defaults to :func:`most_frequent_speaker`;
    ``folder`` to ``speakers/<hash of the text and the speaker>`` under genlit's cache folder
    (:func:`genlit.files.cache_root`)."""
    path = Path(os.path.expandvars(os.path.expanduser(os.fspath(source))))
    if not path.is_file():
        raise FileNotFoundError(f"{source}: no such text file; give a play such as tinyshakespeare/input.txt")
    text = path.read_text(encoding="utf-8")
    speaker = speaker or most_frequent_speaker(text)
    own, others = split_by_speaker(text, speaker)
    if folder is None:
        digest = hashlib.sha256(f"{speaker}\0{text}".encode()).hexdigest()[:16]
        folder = cache_root() / "speakers" / digest
    folder = Path(folder)
    for name, content in ((SPEAKER_FILE, own), (OTHERS_FILE, others)):
        target = folder / name
        if not target.is_file() or target.read_text(encoding="utf-8") != content:
            with atomic_write(target, "w", encoding="utf-8") as handle:
                handle.write(content)
    return SpeakerCorpora(speaker, folder / SPEAKER_FILE, folder / OTHERS_FILE)


def main(argv: list[str] | None = None) -> None:
    """``python -m genlit.data.speakers SOURCE [--speaker NAME] [--out DIR]``: write the corpora, print the paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="a play's text file, e.g. $GENLIT_DATA_DIR/tinyshakespeare/input.txt")
    parser.add_argument("--speaker", default=None, help="the speaker held out (default: the most frequent)")
    parser.add_argument("--out", default=None, help="the folder of the two files (default: in genlit's cache)")
    args = parser.parse_args(argv)
    corpora = write_speaker_corpora(args.source, args.speaker, args.out)
    for name, path in ((corpora.speaker, corpora.speaker_path), ("others", corpora.others_path)):
        print(f"{name}: {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
