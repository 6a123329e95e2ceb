// Writes the brand logos the portal shows into portal/static/logos/, one
// small SVG per simple-icons slug, filled with the brand's colour. Run by
// scripts/extract-logos.sh; the output is committed so `go build` needs no npm.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as icons from 'simple-icons';

const [outDir, ...slugs] = process.argv.slice(2);
if (!outDir || slugs.length === 0) {
  console.error('usage: node extract.mjs <out-dir> <slug>...');
  process.exit(2);
}
const bySlug = new Map(Object.values(icons).map((icon) => [icon.slug, icon]));
const pkg = JSON.parse(readFileSync(new URL('./node_modules/simple-icons/package.json', import.meta.url)));

mkdirSync(outDir, { recursive: true });
const missing = [];
for (const slug of slugs) {
  const icon = bySlug.get(slug);
  if (!icon) {
    missing.push(slug);
    continue;
  }
  // Decorative: the portal always prints the service's name next to it, so
  // the image carries no title and is shown with alt="".
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="#${icon.hex}"><path d="${icon.path}"/></svg>\n`;
  writeFileSync(join(outDir, `${slug}.svg`), svg);
}
writeFileSync(join(outDir, 'NOTICE'),
  `Brand logos from simple-icons ${pkg.version} (CC0 1.0 Universal).\n` +
  'Brands remain the trademarks of their owners; see simple-icons DISCLAIMER.md.\n' +
  'Regenerate with scripts/extract-logos.sh.\n');
if (missing.length > 0) {
  console.error(`simple-icons ${pkg.version} has no icon for: ${missing.join(', ')} (the portal shows a monogram)`);
}
console.log(`wrote ${slugs.length - missing.length} logos to ${outDir}`);
