#!/usr/bin/env bash
# Run HERE (a machine with PyPI) before a GPU call: the wheels the GPU machine lacks, for its
# Python 3.12 (it has torch, numpy, opencv-headless, safetensors, tqdm, matplotlib, imageio),
# into .whl/ (git-ignored; carried with `carry: [".whl"]`). ViZDoom's wheel is repacked without
# freedoom1.wad (29 MB, unused: the Doom worlds run Freedoom2 maps), to fit the 64 MiB a call
# may carry.   bash training/recipes/gpu_bundle.sh [.whl]
set -euo pipefail
DEST=${1:-.whl}
PY=${PY:-python3}
mkdir -p "$DEST"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
get() {  # binary wheels for CPython 3.12, no dependencies (each is named)
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d "$DEST" "$@"
}
get vizdoom==1.3.2 gymnasium==1.4.0 farama-notifications==0.0.6 \
  hydra-core==1.3.2 omegaconf==2.3.0  # pyyaml, cloudpickle, typing-extensions: already there
# antlr4-python3-runtime 4.9.3 (hydra's parser) ships as an sdist only: build its pure wheel
"$PY" -m pip wheel -q --no-deps -w "$DEST" antlr4-python3-runtime==4.9.3
"$PY" - "$DEST" <<'PYEOF'
import sys, zipfile, pathlib
dest = pathlib.Path(sys.argv[1])
for whl in dest.glob("vizdoom-*.whl"):
    slim = whl.with_suffix(".slim")
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as out:
        for item in src.infolist():
            if item.filename.endswith("freedoom1.wad"):
                continue
            data = src.read(item.filename)
            if item.filename.endswith(".dist-info/RECORD"):  # drop the removed file's line
                data = b"\n".join(l for l in data.split(b"\n") if b"freedoom1.wad" not in l)
            out.writestr(item, data)
    slim.replace(whl)
PYEOF
du -ch "$DEST"/*.whl | tail -1
