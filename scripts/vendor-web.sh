#!/usr/bin/env bash
# Refresh the browser assets K2 serves itself (so /docs and /redoc work without internet access):
# Swagger UI and ReDoc, fetched with npm from the npm registry, copied with their licences into
# src/k2/api/static/vendor/. Run by hand when upgrading; `make` never runs it.
set -euo pipefail
SWAGGER=${SWAGGER:-5.36.0}
REDOC=${REDOC:-2.5.4}
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/src/k2/api/static/vendor"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "swagger-ui-dist@$SWAGGER" "redoc@$REDOC" >/dev/null
mkdir swagger redoc
tar xzf "swagger-ui-dist-$SWAGGER.tgz" -C swagger
tar xzf "redoc-$REDOC.tgz" -C redoc
rm -rf "$dest/swagger-ui" "$dest/redoc"
mkdir -p "$dest/swagger-ui" "$dest/redoc"
cp swagger/package/{swagger-ui-bundle.js,swagger-ui-bundle.js.LICENSE.txt,swagger-ui.css,favicon-32x32.png,LICENSE,NOTICE} \
  "$dest/swagger-ui/"
cp redoc/package/bundles/{redoc.standalone.js,redoc.standalone.js.LICENSE.txt} redoc/package/LICENSE "$dest/redoc/"
# source maps would only point at files K2 does not ship
sed -i '/^\/\/# sourceMappingURL=/d' "$dest"/swagger-ui/*.js "$dest"/swagger-ui/*.css "$dest"/redoc/*.js
printf 'swagger-ui-dist %s\nredoc %s\n' "$SWAGGER" "$REDOC" > "$dest/VERSIONS"
echo "vendored swagger-ui-dist $SWAGGER and redoc $REDOC into $dest"
