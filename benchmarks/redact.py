"""Recall and false positives of the ``redact`` filter, and its cost.

- **recall**: secrets generated here (passwords of several alphabets, hex,
  tokens, cloud keys, private keys) planted in realistic lines of the shapes
  Ansible, shells, config files and services print (templates below: task
  results with ``stdout``/``stdout_lines``, inventories, ``mysql -p``,
  ``PGPASSWORD=``, SQL, URLs, YAML/INI/JSON, headers...). A secret counts as
  caught when no piece of it of 6 characters or more is left in the output.
- **false positives**: the default filter over every line of
  ``../shared/corpus`` (and the AWX events' string fields): each mask is
  listed with the words before it and the *shape* of what was masked (its
  length and character classes; never the text), to be read by a person: the
  corpus holds real devstack passwords, which are true positives.
- **cost**: microseconds per line of ``RedactFilter.process`` against
  ``orjson.loads`` + ``orjson.dumps`` of the same events (the decode+encode
  the pipeline pays anyway), both measured in this run.

    .venv/bin/python benchmarks/redact.py                 # 20 samples per template
    .venv/bin/python benchmarks/redact.py --samples 100 --show-misses
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"

# --------------------------------------------------------------------------- secrets

_ALNUM = string.ascii_letters + string.digits
_SYMBOLS = "!@#%^*-_.+=~"


def _password(rng: random.Random) -> str:
    kind = rng.randrange(5)
    size = rng.randint(8, 24)
    if kind == 0:  # hex, as `openssl rand -hex 16` and many installers make
        return "".join(rng.choice("0123456789abcdef") for _ in range(32))
    if kind == 1:  # letters only
        return "".join(rng.choice(string.ascii_letters) for _ in range(size))
    if kind == 2:  # with symbols
        body = [rng.choice(_ALNUM) for _ in range(size - 2)]
        for _ in range(2):
            body.insert(rng.randrange(len(body) + 1), rng.choice(_SYMBOLS))
        return "".join(body)
    return "".join(rng.choice(_ALNUM) for _ in range(size)) + str(rng.randrange(10))


def _token(rng: random.Random) -> str:
    return "".join(rng.choice(_ALNUM + "-._~") for _ in range(rng.randint(24, 64))) + "9"


def _aws_id(rng: random.Random) -> str:
    return rng.choice(("AKIA", "ASIA")) + "".join(
        rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)
    )


def _aws_secret(rng: random.Random) -> str:
    return "".join(rng.choice(_ALNUM + "/+") for _ in range(40))


def _gcp_key(rng: random.Random) -> str:
    return "AIza" + "".join(rng.choice(_ALNUM + "_-") for _ in range(35))


def _gcp_token(rng: random.Random) -> str:
    return "ya29." + "".join(rng.choice(_ALNUM + "_-") for _ in range(rng.randint(60, 120)))


def _key_body(rng: random.Random) -> str:
    return "MII" + "".join(rng.choice(_ALNUM + "+/") for _ in range(rng.randint(60, 200)))


Secret = Callable[[random.Random], str]

# (template, secret maker); {s} is the secret. Lines as they are printed.
TEMPLATES: list[tuple[str, Secret]] = [
    # Ansible task results (default callback, ansible.log, AWX stdout)
    (
        'ok: [db-1] => {"changed": false, "stdout": "The postgres password is {s}", '
        '"stdout_lines": ["The postgres password is {s}"]}',
        _password,
    ),
    ('        "The postgres password is {s}"', _password),
    ('    "stdout": "Generated password for user admin: {s}",', _password),
    ("changed: [web-2] => (item={'name': 'app', 'password': '{s}'})", _password),
    (
        'fatal: [db-1]: FAILED! => {"changed": false, "cmd": "mysql -u root -p{s} -e '
        '\'show databases\'", "rc": 1}',
        _password,
    ),
    ('ok: [h] => {"ansible_facts": {"db_password": "{s}"}, "changed": false}', _password),
    ("2024-03-01 10:00:00,123 p=4242 u=deploy n=ansible | ansible_become_pass: {s}", _password),
    ("web-1 ansible_host=10.0.0.5 ansible_user=deploy ansible_become_pass={s}", _password),
    ("db-1 ansible_ssh_pass='{s}' ansible_become_password='{s}'", _password),
    ("vault_db_password: {s}", _password),
    ('vault_api_secret: "{s}"', _password),
    ("vault_mysql_root: {s}", _password),
    ('    "msg": "vault_pg_admin={s}"', _password),
    # shells
    ("+ PGPASSWORD={s} psql -h db -U app -c 'select 1'", _password),
    ("export PGPASSWORD='{s}'", _password),
    ("MYSQL_PWD={s} mysql -h db -u root app", _password),
    ("mysql -h db -u root -p{s} app < dump.sql", _password),
    ("mysql -h db -u root -p {s} -e 'select 1'", _password),
    ("mysqldump -uroot -p'{s}' --all-databases > all.sql", _password),
    ("mariadb -u root --password={s} -e 'select 1'", _password),
    ("sshpass -p {s} ssh deploy@10.0.0.9 uptime", _password),
    ("openstack --os-password {s} server list", _password),
    ("app-cli login --user admin --password {s}", _password),
    ('app-cli --db-password "{s}" migrate', _password),
    ("curl -u admin:{s} https://nexus.example.com/service/rest", _password),
    # SQL
    ("CREATE USER 'app'@'%' IDENTIFIED BY '{s}';", _password),
    ("ALTER USER postgres WITH PASSWORD '{s}';", _password),
    # config files: YAML, INI, env, JSON
    ("password: {s}", _password),
    ('  password: "{s}"', _password),
    ("password = {s}", _password),
    ("db_password={s}", _password),
    ("REDIS_PASSWORD={s}", _password),
    ('{"username": "app", "password": "{s}"}', _password),
    ('msg="{\\"user\\": \\"app\\", \\"password\\": \\"{s}\\"}"', _password),
    ("The admin password is {s}", _password),
    ("Password for admin set to {s}", _password),
    # URLs
    ("DATABASE_URL=postgresql://app:{s}@db.internal:5432/app", _password),
    ("GET /login?user=alice&password={s}&next=/home HTTP/1.1", _password),
    ("transport_url = rabbit://stack:{s}@10.0.0.5:5672/", _password),
    # tokens and keys
    ("Authorization: Bearer {s}", _token),
    ('curl -H "Authorization: Bearer {s}" https://api.example.com/v1/items', _token),
    ("X-Auth-Token: {s}", _token),
    ('{"access_token": "{s}", "token_type": "bearer"}', _token),
    ("api_key={s}", _token),
    ("AWS_ACCESS_KEY_ID={s}", _aws_id),
    ("aws_secret_access_key = {s}", _aws_secret),
    ("export AWS_SECRET_ACCESS_KEY={s}", _aws_secret),
    ("gcloud: using API key {s}", _gcp_key),
    ('"access_token": "{s}"', _gcp_token),
    ("Authorization: Bearer {s}", _gcp_token),
    (
        '"private_key": "-----BEGIN PRIVATE KEY-----\\n{s}\\n-----END PRIVATE KEY-----\\n"',
        _key_body,
    ),
    ("-----BEGIN RSA PRIVATE KEY-----\n{s}\n-----END RSA PRIVATE KEY-----", _key_body),
]


def samples(per_template: int, seed: int = 12) -> list[tuple[int, str, str]]:
    """(template index, line, secret) for every template, ``per_template`` each."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    out = []
    for index, (template, make) in enumerate(TEMPLATES):
        for _ in range(per_template):
            secret = make(rng)
            out.append((index, template.replace("{s}", secret), secret))
    return out


def leaked(secret: str, text: str, piece: int = 6) -> bool:
    """Whether any ``piece`` characters of ``secret`` in a row are left in ``text``."""
    size = min(piece, len(secret))
    return any(secret[at : at + size] in text for at in range(len(secret) - size + 1))


# --------------------------------------------------------------------------- runs


def build_redact(config: dict[str, Any] | None = None) -> Any:
    from logstream.config import parse_config
    from logstream.metrics import Registry
    from logstream.units import BuildContext

    parsed = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": [{"type": "redact", **(config or {})}],
            "sinks": [{"type": "stdout"}],
        }
    )
    return parsed.filters[0].build("redact", BuildContext(registry=Registry()))


def recall(per_template: int = 20) -> tuple[float, list[tuple[int, str, str]]]:
    """Share of planted secrets caught, and the misses (template index, output, secret)."""
    unit = build_redact()
    planted = samples(per_template)
    out = unit.process([{"message": line} for _, line, _ in planted])
    misses = [
        (index, event["message"], secret)
        for (index, _, secret), event in zip(planted, out, strict=True)
        if leaked(secret, event["message"])
    ]
    return 1 - len(misses) / len(planted), misses


def corpus_texts() -> list[str]:
    texts: list[str] = []
    if not CORPUS.is_dir():
        return texts
    for path in sorted(CORPUS.iterdir()):
        if path.suffix in (".log", ".txt"):
            texts += path.read_bytes().decode("utf-8", "replace").split("\n")
        elif path.suffix == ".json":
            for event in orjson.loads(path.read_bytes()).get("results", []):
                texts += [value for value in event.values() if type(value) is str]
    return [text for text in texts if text]


def _shape(value: str) -> str:
    classes = "".join(
        mark
        for mark, test in (
            ("a", str.islower),
            ("A", str.isupper),
            ("9", str.isdigit),
            ("#", lambda c: not c.isalnum()),
        )
        if any(test(c) for c in value)
    )
    return f"{len(value)} chars [{classes}]"


def masks_in(texts: list[str]) -> list[tuple[str, str]]:
    """(the words before each mask, the shape of what was masked) for the default filter."""
    unit = build_redact({"replacement": "\x00"})
    found = []
    for text in texts:
        [event] = unit.process([{"message": text}])
        masked = event["message"]
        if masked == text:
            continue
        # Walk both texts: each \x00 in `masked` stands for a span of `text`.
        at = 0
        pieces = masked.split("\x00")
        for index, piece in enumerate(pieces[:-1]):
            at = text.index(piece, at) + len(piece) if piece else at
            following = pieces[index + 1]
            end = text.find(following, at) if following else len(text)
            if following and index + 1 == len(pieces) - 1:
                end = len(text) - len(following)
            secret = text[at:end]
            found.append((text[max(0, at - 40) : at].split("\n")[-1], _shape(secret)))
            at = end
    return found


def cost(texts: list[str], repeat: int = 3) -> tuple[float, float]:
    """(µs per line of redact, µs per line of orjson loads + dumps), best of ``repeat``."""
    lines = [orjson.dumps({"message": text, "host": "h", "level": "INFO"}) for text in texts]
    best_redact = best_codec = float("inf")
    for _ in range(repeat):
        unit = build_redact()
        events = [orjson.loads(line) for line in lines]
        start = time.perf_counter()
        for at in range(0, len(events), 1000):
            unit.process(events[at : at + 1000])
        best_redact = min(best_redact, time.perf_counter() - start)
        start = time.perf_counter()
        for line in lines:
            orjson.dumps(orjson.loads(line))
        best_codec = min(best_codec, time.perf_counter() - start)
    return best_redact / len(lines) * 1e6, best_codec / len(lines) * 1e6


def main() -> None:
    # Run as a script, this directory is sys.path[0], and benchmarks/nats.py would
    # shadow the nats package that logstream.config imports.
    if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20, help="secrets per template")
    parser.add_argument("--show-misses", action="store_true", help="print each miss")
    parser.add_argument("--show-masks", action="store_true", help="print each corpus mask")
    args = parser.parse_args()

    share, misses = recall(args.samples)
    total = args.samples * len(TEMPLATES)
    print(f"recall: {share:.2%} of {total} planted secrets ({len(TEMPLATES)} templates)")
    for index, count in Counter(index for index, _, _ in misses).most_common():
        print(f"  missed {count:>4} x  {TEMPLATES[index][0][:90]}")
    if args.show_misses:
        for _, text, _ in misses:
            print(f"    {text[:160]!r}")
    texts = corpus_texts()
    if not texts:
        print(f"no corpus at {CORPUS}: false positives not measured", file=sys.stderr)
        return
    masks = masks_in(texts)
    print(f"corpus: {len(texts):,} texts, {len(masks)} masks (read them: --show-masks)")
    if args.show_masks:
        for before, shape in masks:
            print(f"  ...{before!r:>46} -> {shape}")
    redact_us, codec_us = cost(texts)
    print(
        f"cost: redact {redact_us:.2f} us/line, orjson loads+dumps {codec_us:.2f} us/line "
        f"(ratio {redact_us / codec_us:.2f})"
    )


if __name__ == "__main__":
    main()
