#!/usr/bin/env bash
# The diffusion decoder's strength, then guidance, chosen on the validation split
# (results/decoder_search_fashion_mnist/recipe.yaml): strength 0.5, 0.7, 0.9 at guidance 4, then
# guidance 1.5 and 8 at the best strength; strength 0 (= VAE decoding) is scored beside
# them for reference. Prints each point's val accuracy (stderr) and the best setting as
# "STRENGTH GUIDANCE" (stdout); re-running skips finished points.
set -euo pipefail
cd "$(dirname "$0")/.."
config=results/decoder_search_fashion_mnist/recipe.yaml
out=${OUT:-runs/search_decoder}
point() {  # strength guidance
  latentdd run --config "$config" --strength "$1" --guidance-scale "$2" --out "$out/s$1_g$2" >&2
}
best() {  # the folder name with the highest val accuracy among those given
  python - "$@" <<'PY'
import json, sys
from pathlib import Path
scores = {f: json.loads(next(Path(f).glob("reports/*_val.json")).read_text())["mean"] for f in sys.argv[1:]}
for f, acc in scores.items():
    print(f"{Path(f).name}\t{acc:.2f}", file=sys.stderr)
print(Path(max(scores, key=scores.get)).name)
PY
}
for s in 0 0.5 0.7 0.9; do point "$s" 4; done
best "$out/s0_g4" > /dev/null  # the VAE-decoding reference
s=$(best "$out"/s{0.5,0.7,0.9}_g4 | sed -E 's/^s([0-9.]+)_g.*/\1/')
for g in 1.5 8; do point "$s" "$g"; done
best "$out/s${s}_g4" "$out/s${s}_g1.5" "$out/s${s}_g8" | sed -E 's/^s([0-9.]+)_g([0-9.]+)$/\1 \2/'
