#!/usr/bin/env bash
# Prepares scripts/gpu_check.py's run on the lent GPU machine, which has no network: the Python
# packages it lacks or holds at another version, as wheels for its Python 3.12 at the versions
# of requirements.lock, and a chat tokenizer (the embedded SmolLM2's: only text lengths
# matter), in .gpu/ (git-ignored). The machine already holds torch, accelerate and a
# huggingface_hub and tokenizers that the locked transformers accepts. bitsandbytes keeps only
# its CUDA 13 libraries (the machine's torch is a CUDA 13 build): the whole wheel (43 MB) would
# not fit the 64 MiB a device run carries. About 24 MB. Run it here, then on the device:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
#       --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src &&
#   PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py --tokenizer .gpu/tokenizer \
#       --out $OUT/gpu --write-docs && cp docs/gpu_check.json $OUT/
#
# with carry [".gpu"] (see the device tool's README).
set -euo pipefail
cd "$(dirname "$0")/.."
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
rm -rf .gpu && mkdir -p .gpu/whl .gpu/tokenizer
pins=$(grep -iE '^(bitsandbytes|trl|datasets|dill|multiprocess|pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|peft|transformers)==' requirements.lock)
platforms=""
for n in 2_28 2_27 2_24 2_17; do platforms="$platforms --platform manylinux_${n}_x86_64"; done
# shellcheck disable=SC2086
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp $platforms --platform manylinux2014_x86_64 -d .gpu/whl $pins
python3 - .gpu/whl/bitsandbytes-*.whl <<'PY'
import sys, zipfile
from pathlib import Path

# Only the CPU and CUDA 13 libraries, and RECORD without the files left out.
wheel = Path(sys.argv[1])
slim = wheel.with_suffix(".slim")
keep = lambda name: not (name.endswith(".so") and "cuda13" not in name and "_cpu" not in name)
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
    for item in src.infolist():
        if not keep(item.filename):
            continue
        data = src.read(item)
        if item.filename.endswith("RECORD"):
            data = "".join(line for line in data.decode().splitlines(keepends=True)
                           if keep(line.split(",")[0])).encode()
        dst.writestr(item, data)
slim.replace(wheel)
PY
model=outputs/models/SmolLM2-135M-Instruct
if [ ! -f "$model/tokenizer.json" ]; then
    echo "gpu_prepare: no converted embedded model at $model: run make run (or the tests) once" >&2
    exit 2
fi
cp "$model"/tokenizer.json "$model"/tokenizer_config.json .gpu/tokenizer/
[ -f "$model/chat_template.jinja" ] && cp "$model/chat_template.jinja" .gpu/tokenizer/
echo "wrote .gpu/: $(ls .gpu/whl | wc -l) wheels and a tokenizer, $(du -sh .gpu | cut -f1)"
