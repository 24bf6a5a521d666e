#!/usr/bin/env bash
# Build both images (trainer_image/, inference_image/), run each image's self-test inside it, and
# print each image's size and build time. Opt-in: not part of the default test run (see README,
# "Images", for how long it takes).
#
#   bash scripts/build-images.sh [--local | --real] [--only trainer|inference] [--no-selftest]
#
#   --real   the Dockerfiles' defaults: nvidia/cuda base, CUDA torch, sources from GitHub,
#            tokenizers from the Hub. Needs Docker (or buildah) and the internet. What the release
#            workflow (.github/workflows/images.yml) builds.
#   --local  for a machine without a Docker engine, GitHub, the CUDA index or the Hub (the default
#            when `docker info` fails): buildah as root (vfs storage, chroot isolation), a Debian
#            base made with debootstrap, torch wheels from $TORCH_WHEELS, sd-scripts and
#            ComfyUI exported from local git directories, no tokenizer download. The machine's CA
#            bundle ($CA_BUNDLE) reaches pip as a build secret, never a layer.
#
# Environment: ENGINE (docker|buildah), TAG (default: the package version), TORCH_LOCAL and
# TORCH_WHEELS (torch==2.14.1 torchvision==0.29.1 from "/opt/pypi-more/files /opt/pypi/files": a
# CUDA build that runs on the CPU; ComfyUI's packs and kohya need torchvision, and no torchvision
# on PyPI loads beside the CPU torch wheel), LAYERS (true|false; default false for a local vfs
# build, whose every cached step is a whole copy of the file system: several GB each here), MIRRORS (/work/.mirror: <owner>+<repo>/repo git
# directories holding the sources the Dockerfiles name in ARG <NAME>_SOURCE), CA_BUNDLE
# (/etc/ssl/certs/ca-certificates.crt), PYTHON (runs the self-tests' pytest; default .venv/bin/python),
# IMAGES_WORK (/var/tmp/lora-cloud-images: the debootstrap root, logs).
# Self-tests: tests/images/test_image_selftest.py, run here with LORA_CLOUD_TEST_IMAGES=1.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

MODE="" ONLY="" SELFTEST=1
while [ $# -gt 0 ]; do
  case "$1" in
    --local) MODE=local ;;
    --real) MODE=real ;;
    --only) ONLY="$2"; shift ;;
    --no-selftest) SELFTEST=0 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "[build-images] $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
TAG="${TAG:-$VERSION}"
REGISTRY="$(sed -n 's/^ *IMAGE_PREFIX: *//p' .github/workflows/images.yml | head -1)"
[ -n "$REGISTRY" ] || die "no IMAGE_PREFIX in .github/workflows/images.yml"
WORK="${IMAGES_WORK:-/var/tmp/lora-cloud-images}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
mkdir -p "$WORK"

if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then ENGINE=docker
  elif command -v buildah >/dev/null 2>&1; then ENGINE=buildah
  else die "neither a working Docker nor buildah (apt-get install buildah debootstrap)"; fi
fi
if [ "$ENGINE" = buildah ]; then
  [ "$(id -u)" = 0 ] || die "buildah builds here need root (vfs storage, chroot isolation)"
  export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}" BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
fi
[ -n "$MODE" ] || { [ "$ENGINE" = docker ] && MODE=real || MODE=local; }
say "engine $ENGINE, mode $MODE, tag $TAG"

# ---- local substitutes ------------------------------------------------------------------------
LOCAL_BASE="localhost/lora-cloud-base:bookworm"

local_base() {  # a Debian bookworm minbase made with debootstrap, imported once
  if [ "$ENGINE" = buildah ] && buildah inspect --type image "$LOCAL_BASE" >/dev/null 2>&1; then return; fi
  if [ "$ENGINE" = docker ] && docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then return; fi
  command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
  local root="$WORK/rootfs-bookworm"
  if [ ! -x "$root/usr/bin/apt-get" ]; then
    rm -rf "$root"
    say "debootstrap bookworm into $root"
    nice -n 10 debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
      || die "debootstrap failed: $WORK/debootstrap.log"
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  if [ "$ENGINE" = buildah ]; then
    local ctr mnt
    ctr="$(buildah from scratch)"
    mnt="$(buildah mount "$ctr")"
    tar -C "$root" -cf - . | tar -C "$mnt" -xpf -
    buildah umount "$ctr" >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash "$ctr"
    buildah commit --rm "$ctr" "$LOCAL_BASE" >/dev/null
  else
    tar -C "$root" -cf - . | docker import --change 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >/dev/null
  fi
  say "imported $LOCAL_BASE"
}

export_source() {  # GIT_DIR COMMIT DEST: the tree at COMMIT, plus .source-commit naming it
  local git_dir="$1" commit="$2" dest="$3"
  if [ -f "$dest/.source-commit" ] && [ "$(cat "$dest/.source-commit")" = "$commit" ]; then return; fi
  [ -d "$git_dir" ] || die "no git directory at $git_dir (MIRRORS)"
  git --git-dir="$git_dir" cat-file -e "$commit^{commit}" 2>/dev/null || die "$git_dir lacks commit $commit"
  rm -rf "$dest" && mkdir -p "$dest"
  # a partial mirror lacks big blobs (sd-scripts' Windows DLLs, ComfyUI's test images): leave them
  # out and list them in .source-missing
  local tree="$WORK/tree.txt" spec=(.)
  git --git-dir="$git_dir" ls-tree -r "$commit" | awk -F '\t' '{split($1, a, " "); if (a[2] == "blob") print a[3] "\t" $2}' >"$tree"
  cut -f1 "$tree" | git --git-dir="$git_dir" cat-file --batch-check | awk '$2 == "missing" {print $1}' >"$tree.missing"
  awk -F '\t' 'NR == FNR {m[$1] = 1; next} ($1 in m) {print $2}' "$tree.missing" "$tree" >"$dest/.source-missing"
  while IFS= read -r path; do spec+=(":(exclude)$path"); done <"$dest/.source-missing"
  git --git-dir="$git_dir" archive "$commit" -- "${spec[@]}" 2> >(grep -v -e 'invalid object' -e 'cannot read' >&2) \
    | tar -C "$dest" -xf - || die "could not export $commit of $git_dir"
  echo "$commit" >"$dest/.source-commit"
  say "exported $commit of $git_dir into $dest ($(wc -l <"$dest/.source-missing") blobs missing from the mirror left out)"
}

link_wheels() {  # DEST "DIR..." GLOB...: hard-link (else copy) the matching wheels into DEST
  local dest="$1" dirs="$2" d g f found=1; shift 2
  for d in $dirs; do
    for g in "$@"; do
      for f in "$d"/$g; do
        [ -f "$f" ] || continue
        found=0
        [ -e "$dest/${f##*/}" ] || ln "$f" "$dest/" 2>/dev/null || cp "$f" "$dest/"
      done
    done
  done
  return "$found"
}

arg_default() {  # DOCKERFILE NAME: the default of ARG NAME
  sed -n "s/^ARG $2=//p" "$1" | head -1 | tr -d '"'
}

# ---- building ---------------------------------------------------------------------------------
declare -A BUILD_S REF
# buildah's vfs driver stores every layer as a whole copy of the file system: with a CUDA torch
# (several GB) each cached step would cost that much disk again, so a local vfs build commits one
# layer per stage (LAYERS=true|false overrides).
layers_for() {
  if [ -n "${LAYERS:-}" ]; then echo "$LAYERS"
  elif [ "$MODE" = local ] && [ "${STORAGE_DRIVER:-}" = vfs ]; then echo false
  else echo true; fi
}

build() {  # NAME DOCKERFILE EXTRA_BUILD_ARGS...
  local name="$1" file="$2"; shift 2
  local ref="$REGISTRY/$name:$TAG" start end
  REF[$name]="$ref"
  say "building $ref"
  start=$(date +%s)
  if [ "$ENGINE" = buildah ]; then
    nice -n 10 buildah bud "--layers=$(layers_for "$name")" --format docker -f "$file" -t "$ref" "$@" . >"$WORK/build-$name.log" 2>&1 \
      || { tail -40 "$WORK/build-$name.log" >&2; die "build of $name failed: $WORK/build-$name.log"; }
  else
    DOCKER_BUILDKIT=1 nice -n 10 docker build --progress=plain -f "$file" -t "$ref" "$@" . >"$WORK/build-$name.log" 2>&1 \
      || { tail -40 "$WORK/build-$name.log" >&2; die "build of $name failed: $WORK/build-$name.log"; }
  fi
  end=$(date +%s)
  BUILD_S[$name]=$((end - start))
  # cache hits among the steps that make layers (buildah: "--> Using cache"; BuildKit: "#N CACHED")
  local hits
  hits=$(awk '/STEP [0-9]+\/[0-9]+: (RUN|COPY|ADD)/ {n++; cur = 1; next}
              /STEP [0-9]+\/[0-9]+:/ {cur = 0; next}
              /^--> Using cache/ && cur {c++}
              /^#[0-9]+ \[.*\] (RUN|COPY|ADD)/ {id[$1] = 1; n++}
              /^#[0-9]+ CACHED/ && ($1 in id) {c++}
              END {printf "%d of %d", c, n}' "$WORK/build-$name.log")
  say "built $ref in ${BUILD_S[$name]} s ($hits RUN/COPY steps from the cache; log $WORK/build-$name.log)"
}

size_of() {
  if [ "$ENGINE" = buildah ]; then buildah images --format '{{.Size}}' "$1" | head -1
  else docker image inspect --format '{{.Size}}' "$1" | awk '{printf "%.2f GB\n", $1/1e9}'; fi
}

secret_args=()
if [ "$MODE" = local ] && [ -s "$CA_BUNDLE" ]; then secret_args=(--secret "id=ca_bundle,src=$CA_BUNDLE"); fi

want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

mirror_of() {  # a git URL -> the local git directory holding it ($MIRRORS/<owner>+<repo>/repo)
  local url="${1%.git}" repo owner found
  repo="${url##*/}"; owner="${url%/*}"; owner="${owner##*/}"
  if [ -d "$MIRRORS/$owner+$repo/repo" ]; then echo "$MIRRORS/$owner+$repo/repo"; return; fi
  found=("$MIRRORS"/*+"$repo"/repo)  # a repository that moved (comfyanonymous/ComfyUI -> Comfy-Org)
  [ "${#found[@]}" = 1 ] && [ -d "${found[0]}" ] && echo "${found[0]}"
}

# The local substitutes for one image, by the Dockerfiles' convention: every `ARG <NAME>_SOURCE=<git
# URL>` with its `ARG <NAME>_COMMIT=<sha>` is exported into <image>_image/sources/<repo> and passed
# as `<NAME>_SOURCE=<repo>`; TORCH_PACKAGES/TORCH_INDEX_URL/TORCH_FIND_LINKS take the local wheels;
# BASE_IMAGE the debootstrapped base; DOWNLOAD_TOKENIZERS=0 where declared.
local_args() {  # IMAGE_DIR -> fills the array ARGS
  local dir="$1" file="$1/Dockerfile" name url commit repo git_dir torch_local wheel_glob
  ARGS=(--build-arg "BASE_IMAGE=$LOCAL_BASE")
  local_base
  while read -r name url; do
    commit="$(arg_default "$file" "${name}_COMMIT")"
    [ -n "$commit" ] || die "$file: ARG ${name}_SOURCE has no ${name}_COMMIT"
    repo="${url%.git}"; repo="${repo##*/}"
    git_dir="$(mirror_of "$url")" || true
    [ -n "$git_dir" ] || die "no local git directory for $url under $MIRRORS (fetch it first)"
    export_source "$git_dir" "$commit" "$dir/sources/$repo"
    ARGS+=(--build-arg "${name}_SOURCE=$repo")
  done < <(sed -n 's/^ARG \([A-Z0-9_]*\)_SOURCE=\(.*:\/\/.*\)$/\1 \2/p' "$file")
  if grep -q '^ARG TORCH_PACKAGES' "$file"; then
    local wheel_dirs="${TORCH_WHEELS:-/opt/pypi-more/files /opt/pypi/files}" pkg
    torch_local="${TORCH_LOCAL:-torch==2.14.1 torchvision==0.29.1}"
    mkdir -p "$dir/sources/wheels"
    for pkg in $torch_local; do
      wheel_glob="${pkg%%==*}-${pkg#*==}-*.whl"
      link_wheels "$dir/sources/wheels" "$wheel_dirs" "$wheel_glob" || die "no $wheel_glob in $wheel_dirs"
    done
    # a CUDA build's own wheels (CUDA libraries, triton), where the folders have them; pip takes
    # the rest from PyPI
    link_wheels "$dir/sources/wheels" "$wheel_dirs" 'nvidia_*.whl' 'cuda_*.whl' 'triton-*.whl' || true
    ARGS+=(--build-arg "TORCH_PACKAGES=$torch_local" --build-arg TORCH_INDEX_URL=
           --build-arg TORCH_FIND_LINKS=/tmp/sources/wheels)
  fi
  if grep -q '^ARG DOWNLOAD_TOKENIZERS' "$file"; then ARGS+=(--build-arg DOWNLOAD_TOKENIZERS=0); fi
}

MIRRORS="${MIRRORS:-/work/.mirror}"
for name in trainer inference; do
  want "$name" || continue
  if [ ! -f "${name}_image/Dockerfile" ]; then say "${name}_image/Dockerfile does not exist yet: skipped"; continue; fi
  ARGS=()
  if [ "$MODE" = local ]; then
    if ! grep -q '^ARG [A-Z0-9_]*_SOURCE=' "${name}_image/Dockerfile" && grep -q 'git clone' "${name}_image/Dockerfile"; then
      say "${name}_image/Dockerfile clones from git without a <NAME>_SOURCE build argument: it cannot build without GitHub; skipped"
      continue
    fi
    local_args "${name}_image"
  fi
  build "$name" "${name}_image/Dockerfile" "${ARGS[@]}" "${secret_args[@]}"
done

# ---- self-tests, inside the built images ------------------------------------------------------
status=0
if [ "$SELFTEST" = 1 ]; then
  PY="${PYTHON:-}"
  [ -n "$PY" ] || { [ -x .venv/bin/python ] && PY=.venv/bin/python || PY=python3; }
  say "self-tests: $PY -m pytest tests/images/test_selftest_in_images.py (LORA_CLOUD_TEST_IMAGES=1)"
  LORA_CLOUD_TEST_IMAGES=1 LORA_CLOUD_IMAGE_ENGINE="$ENGINE" \
    LORA_CLOUD_TRAINER_IMAGE_REF="${REF[trainer]:-}" LORA_CLOUD_INFERENCE_IMAGE_REF="${REF[inference]:-}" \
    LORA_CLOUD_CA_BUNDLE="$CA_BUNDLE" PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" \
    "$PY" -m pytest tests/images/test_selftest_in_images.py -q -p no:cacheprovider -o addopts="" -rs || status=$?
fi

echo
printf '%-10s %-48s %10s %12s\n' image reference size "build time"
for name in trainer inference; do
  [ -n "${REF[$name]:-}" ] || continue
  printf '%-10s %-48s %10s %11ss\n' "$name" "${REF[$name]}" "$(size_of "${REF[$name]}")" "${BUILD_S[$name]}"
done
if [ "$SELFTEST" = 0 ]; then say "self-tests not run (--no-selftest)"
elif [ "$status" = 0 ]; then say "self-tests passed"
else say "self-tests FAILED (exit $status)"; fi
exit "$status"
