#!/usr/bin/env bash
# Build the guest packages: gagent-guest_VERSION_all.deb (dpkg-deb) and
# gagent-guest-VERSION-1.noarch.rpm (rpmbuild), into dist/ by default.
#
#   scripts/build-packages.sh [--out DIR] [--no-lint] [deb] [rpm]
#
# Builds both when neither is named.  The .deb is checked with lintian when
# it is installed (errors fail the build; the tags we accept are overridden,
# with reasons, in packaging/deb/lintian-overrides).  Needs dpkg-deb (dpkg),
# rpmbuild (Debian package "rpm"), lintian and python3 3.11+ (pyproject.toml
# gives the version, maintainer and URLs); nothing else, no root, and nothing
# is installed: the packages are only built.  The output does not depend on
# the build time (SOURCE_DATE_EPOCH: the last commit's, else fixed).
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$REPO/dist
LINT=1
WANT=()
while (($#)); do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    --no-lint) LINT=0; shift ;;
    deb | rpm) WANT+=("$1"); shift ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build-packages: unknown argument $1" >&2; exit 2 ;;
  esac
done
((${#WANT[@]})) || WANT=(deb rpm)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

PKG=gagent-guest
# VERSION, MAINTAINER, HOMEPAGE, SOURCE: pyproject.toml is their one source (a warning line
# when the maintainer address or homepage is still an example.org placeholder)
metadata=$(python3 "$REPO/scripts/package-metadata.py" "$REPO/pyproject.toml") || exit 1
eval "$metadata"
GUEST_VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$REPO/guest/__init__.py")
if [ "$GUEST_VERSION" != "$VERSION" ]; then
  echo "build-packages: guest/__init__.py says $GUEST_VERSION, pyproject.toml $VERSION" >&2
  exit 1
fi
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 1767225600)
fi
export SOURCE_DATE_EPOCH
P=$REPO/packaging
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gagent-packages.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# sed FILE with @VERSION@, @MAINTAINER@, @HOMEPAGE@ and @SOURCE@ filled in (and more sed
# arguments before FILE); the values may hold any of sed's special characters.
fill() {
  local key value expressions=()
  for key in VERSION MAINTAINER HOMEPAGE SOURCE; do
    value=${!key}
    value=${value//\\/\\\\}
    value=${value//|/\\|}
    value=${value//&/\\&}
    expressions+=(-e "s|@$key@|$value|g")
  done
  sed "${expressions[@]}" "$@"
}

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "build-packages: $1 is missing ($2)" >&2; exit 3; }
}

# The maintainer script $1 with the shared live-system guard inlined.
maintscript() {
  awk -v guard="$P/deb/guard.sh" '
    $0 == "#GAGENT-GUARD#" { while ((getline line < guard) > 0) print line; next }
    { print }
  ' "$P/deb/$1"
}

build_deb() {
  need dpkg-deb "apt-get install dpkg"
  local root=$WORK/deb/$PKG doc site
  doc=$root/usr/share/doc/$PKG
  site=$root/usr/lib/python3/dist-packages/gagent
  install -D -m 0755 "$P/bin/gagent-guest" "$root/usr/bin/gagent-guest"
  install -D -m 0644 "$P/python/gagent/__init__.py" "$site/__init__.py"
  for f in "$REPO"/guest/*.py; do
    install -D -m 0644 "$f" "$site/guest/${f##*/}"
  done
  install -D -m 0644 "$P/udev/61-gagent-qga.rules" "$root/lib/udev/rules.d/61-gagent-qga.rules"
  install -D -m 0644 "$P/systemd/gagent-qga@.service" "$root/lib/systemd/system/gagent-qga@.service"
  install -D -m 0755 "$P/fsfreeze/fsfreeze-hook" "$root/etc/gagent/fsfreeze-hook"
  install -d -m 0755 "$root/etc/gagent/fsfreeze-hook.d"
  install -D -m 0644 "$P/fsfreeze/deadman.conf" "$root/etc/gagent/deadman.conf"
  install -D -m 0644 "$P/default/gagent-qga" "$root/etc/default/gagent-qga"
  mkdir -p "$doc"
  fill "$P/deb/copyright.in" >"$doc/copyright"
  install -D -m 0644 "$P/fsfreeze/examples/10-example" "$doc/examples/fsfreeze-hook.d/10-example"
  install -D -m 0644 "$P/sysvinit/gagent-qga" "$doc/examples/sysvinit/gagent-qga"
  install -D -m 0644 "$P/deb/README.Debian" "$doc/README.Debian"
  install -D -m 0644 "$P/deb/lintian-overrides" "$root/usr/share/lintian/overrides/$PKG"
  local date
  date=$(LC_ALL=C date -u -d "@$SOURCE_DATE_EPOCH" '+%a, %d %b %Y %H:%M:%S +0000')
  printf '%s (%s) unstable; urgency=medium\n\n  * Built from the gagent repository.\n\n -- %s  %s\n' \
    "$PKG" "$VERSION" "$MAINTAINER" "$date" | gzip -9n >"$doc/changelog.gz"
  mkdir -p "$root/usr/share/man/man1"
  gzip -9n <"$P/man/gagent-guest.1" >"$root/usr/share/man/man1/gagent-guest.1.gz"
  chmod 0644 "$doc/copyright" "$doc/changelog.gz" "$root/usr/share/man/man1/gagent-guest.1.gz"

  mkdir -p "$root/DEBIAN"
  (cd "$root" && find etc -type f | sort | sed 's,^,/,') >"$root/DEBIAN/conffiles"
  (cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -print \
    | sed 's,^\./,,' | LC_ALL=C sort | xargs md5sum) >"$root/DEBIAN/md5sums"
  local size
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  fill -e "s/@SIZE@/$size/" "$P/deb/control.in" >"$root/DEBIAN/control"
  for script in postinst prerm postrm; do
    maintscript "$script" >"$root/DEBIAN/$script"
    chmod 0755 "$root/DEBIAN/$script"
  done
  chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
  find "$root" -type d -exec chmod 0755 {} +
  find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  local deb=$OUT/${PKG}_${VERSION}_all.deb
  dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
  echo "built $deb"
  if ((LINT)); then
    if command -v lintian >/dev/null 2>&1; then
      # errors fail the build; warnings are printed (each has an override or a fix)
      lintian --fail-on error --display-info "$deb" || {
        echo "build-packages: lintian found errors in $deb" >&2
        exit 4
      }
      echo "lintian: no errors in $deb"
    else
      echo "build-packages: lintian is not installed: .deb not linted (apt-get install lintian)" >&2
    fi
  fi
}

build_rpm() {
  need rpmbuild "apt-get install rpm"
  local top=$WORK/rpm src=$WORK/src/$PKG-$VERSION
  mkdir -p "$top"/{BUILD,RPMS,SOURCES,SPECS,SRPMS} "$src/guest"
  cp "$REPO"/guest/*.py "$src/guest/"
  mkdir -p "$src/packaging"
  for d in bin python udev systemd default fsfreeze man sysvinit; do
    cp -r "$P/$d" "$src/packaging/"
  done
  find "$src" -name __pycache__ -prune -exec rm -rf {} +
  find "$src" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  tar -C "$WORK/src" --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime="@$SOURCE_DATE_EPOCH" -czf "$top/SOURCES/$PKG-$VERSION.tar.gz" "$PKG-$VERSION"
  fill "$P/rpm/gagent-guest.spec" >"$top/SPECS/$PKG.spec"
  # --nodeps: the build host is Debian (no rpm database of its packages)
  rpmbuild -bb --nodeps --quiet \
    --define "_topdir $top" \
    --define "_build_id_links none" \
    --define "use_source_date_epoch_as_buildtime 1" \
    --define "clamp_mtime_to_source_date_epoch 1" \
    "$top/SPECS/$PKG.spec" >"$WORK/rpmbuild.log" 2>&1 || {
    cat "$WORK/rpmbuild.log" >&2
    echo "build-packages: rpmbuild failed" >&2
    exit 5
  }
  local rpm
  for rpm in "$top"/RPMS/noarch/*.rpm; do
    cp "$rpm" "$OUT/"
    echo "built $OUT/${rpm##*/}"
  done
}

for kind in "${WANT[@]}"; do
  "build_$kind"
done
