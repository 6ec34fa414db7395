// The gallery room: floor, walls, lights, and the framed pictures of GET /gallery/images
// laid out along the four walls (works with none). Textures for the floor and the title
// plaques are drawn at run time on canvases; picture titles are drawn as canvas text, never
// parsed as HTML.

import * as THREE from "three";

const WALL_HEIGHT = 5;
const WALL_THICKNESS = 0.3;
const SPACING = 5; // metres between picture centres along a wall
const PICTURE_MAX_W = 2.6;
const PICTURE_MAX_H = 1.9;
const PICTURE_Y = 2.1; // centre height
const MIN_HALF = 10;

/** A picture to hang: its URL ("" for none) and a title for the plaque.
 * @typedef {{ url: string, title?: string }} GalleryImage */
/** Where a picture hangs: centre (y defaults to 2.1 m), turn about y, and the largest size
 * (metres; defaults 2.6 x 1.9).
 * @typedef {{ x: number, y?: number, z: number, rotY: number, w?: number, h?: number }} PictureSlot */
/** What buildGallery and buildWorld return.
 * @typedef {{ half: number, pictures: THREE.Group[], loaded: Promise<boolean[]> }} BuiltRoom */

/** Half size of the square room needed for n pictures.
 * @param {number} n @returns {number} */
export function roomHalfSize(n) {
  const perWall = Math.ceil(n / 4);
  return Math.max(MIN_HALF, (perWall * SPACING + 4) / 2);
}

/** Where picture i of n hangs: { x, z, rotY } (rotY turns the picture to face the room).
 * @param {number} i @param {number} n @param {number} half
 * @returns {PictureSlot} */
export function pictureSlot(i, n, half) {
  const wall = i % 4;
  const slot = Math.floor(i / 4);
  const onWall = Math.ceil((n - wall) / 4); // pictures on this wall
  const along = (slot - (onWall - 1) / 2) * SPACING;
  const inset = half - WALL_THICKNESS / 2 - 0.06;
  switch (wall) {
    case 0: // north wall (+z), faces -z
      return { x: -along, z: inset, rotY: Math.PI };
    case 1: // east wall (-x side seen from spawn), faces +x
      return { x: -inset, z: -along, rotY: Math.PI / 2 };
    case 2: // south wall (-z), faces +z
      return { x: along, z: -inset, rotY: 0 };
    default: // west wall (+x), faces -x
      return { x: inset, z: along, rotY: -Math.PI / 2 };
  }
}

/**
 * @param {number} width @param {number} height
 * @param {(g: CanvasRenderingContext2D, w: number, h: number) => void} draw
 * @returns {THREE.CanvasTexture}
 */
function canvasTexture(width, height, draw) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const g = canvas.getContext("2d");
  if (g) draw(g, width, height); // no 2D context: a blank texture
  const tex = new THREE.CanvasTexture(canvas);
  tex.colorSpace = THREE.SRGBColorSpace;
  tex.anisotropy = 4;
  return tex;
}

/** The wooden floor's planks (repeat it). @returns {THREE.CanvasTexture} */
export function floorTexture() {
  const tex = canvasTexture(512, 512, (g, w, h) => {
    g.fillStyle = "#8a6a4a";
    g.fillRect(0, 0, w, h);
    const plank = 64;
    for (let row = 0; row < h / plank; row++) {
      const offset = (row % 2) * 128;
      for (let x = -offset; x < w; x += 256) {
        const shade = 110 + ((row * 37 + x) % 40);
        g.fillStyle = `rgb(${shade + 30}, ${shade}, ${shade - 35})`;
        g.fillRect(x + 2, row * plank + 2, 252, plank - 4);
      }
    }
  });
  tex.wrapS = tex.wrapT = THREE.RepeatWrapping;
  return tex;
}

/** A title plaque with `text` drawn on it (canvas text, never HTML).
 * @param {string} text @returns {THREE.CanvasTexture} */
export function plaqueTexture(text) {
  return canvasTexture(512, 96, (g, w, h) => {
    g.fillStyle = "#f4efe6";
    g.fillRect(0, 0, w, h);
    g.strokeStyle = "#b7a98f";
    g.lineWidth = 4;
    g.strokeRect(2, 2, w - 4, h - 4);
    g.fillStyle = "#2b2620";
    g.textAlign = "center";
    g.textBaseline = "middle";
    let size = 44;
    g.font = `${size}px Georgia, serif`;
    while (g.measureText(text).width > w - 30 && size > 14) {
      size -= 2;
      g.font = `${size}px Georgia, serif`;
    }
    g.fillText(text, w / 2, h / 2 + 2, w - 30);
  });
}

/** The neutral canvas of a slot without a picture. @returns {THREE.CanvasTexture} */
export function placeholderTexture() {
  return canvasTexture(512, 384, (g, w, h) => {
    const grad = g.createLinearGradient(0, 0, w, h);
    grad.addColorStop(0, "#cfd8e3");
    grad.addColorStop(1, "#93a3b8");
    g.fillStyle = grad;
    g.fillRect(0, 0, w, h);
    g.fillStyle = "#334";
    g.font = "36px sans-serif";
    g.textAlign = "center";
    g.fillText("No pictures yet", w / 2, h / 2);
  });
}

/** @param {THREE.Group} group @param {number} half */
function addWalls(group, half) {
  const mat = new THREE.MeshStandardMaterial({ color: 0xe9e4da, roughness: 0.95 });
  const trim = new THREE.MeshStandardMaterial({ color: 0x4a4038, roughness: 0.7 });
  const len = 2 * half + WALL_THICKNESS;
  const specs = [
    [0, half, len, 0],
    [0, -half, len, 0],
    [half, 0, len, Math.PI / 2],
    [-half, 0, len, Math.PI / 2],
  ];
  for (const [x, z, l, rot] of specs) {
    const wall = new THREE.Mesh(new THREE.BoxGeometry(l, WALL_HEIGHT, WALL_THICKNESS), mat);
    wall.position.set(x, WALL_HEIGHT / 2, z);
    wall.rotation.y = rot;
    group.add(wall);
    const skirting = new THREE.Mesh(new THREE.BoxGeometry(l, 0.2, WALL_THICKNESS + 0.06), trim);
    skirting.position.set(x, 0.1, z);
    skirting.rotation.y = rot;
    group.add(skirting);
  }
}

/** @param {THREE.Scene} scene @param {number} half */
function addLights(scene, half) {
  scene.add(new THREE.HemisphereLight(0xfff8ee, 0x6b5a48, 1.1));
  const sun = new THREE.DirectionalLight(0xffffff, 1.4);
  sun.position.set(half * 0.6, 20, half * 0.3);
  scene.add(sun);
  const fill = new THREE.DirectionalLight(0xdde6ff, 0.5);
  fill.position.set(-half * 0.5, 12, -half * 0.7);
  scene.add(fill);
  // Ceiling light panels (bright, unlit meshes): they read as lamps from inside.
  const panelMat = new THREE.MeshBasicMaterial({ color: 0xfffbe8 });
  const rows = Math.max(1, Math.round(half / 8));
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < rows; j++) {
      const panel = new THREE.Mesh(new THREE.BoxGeometry(2.2, 0.08, 0.6), panelMat);
      panel.position.set(((i + 0.5) / rows - 0.5) * half * 1.6, WALL_HEIGHT - 0.1, ((j + 0.5) / rows - 0.5) * half * 1.6);
      scene.add(panel);
    }
  }
}

/**
 * A framed picture (and its plaque) in `slot`, added to `group`; the image loads in the
 * background and `onLoaded(ok)` says how it went. Returns the holder: children[0] the
 * frame, children[1] the picture (a mesh with a MeshStandardMaterial).
 * @param {THREE.Group} group
 * @param {THREE.TextureLoader} loader
 * @param {GalleryImage} image
 * @param {PictureSlot} slot
 * @param {(ok: boolean) => void} [onLoaded]
 * @returns {THREE.Group}
 */
export function addPicture(group, loader, image, slot, onLoaded) {
  const holder = new THREE.Group();
  holder.position.set(slot.x, slot.y ?? PICTURE_Y, slot.z);
  const maxW = slot.w ?? PICTURE_MAX_W;
  const maxH = slot.h ?? PICTURE_MAX_H;
  holder.rotation.y = slot.rotY;
  const frameMat = new THREE.MeshStandardMaterial({ color: 0x3b2a1c, roughness: 0.6, metalness: 0.1 });
  const frame = new THREE.Mesh(new THREE.BoxGeometry(1, 1, 0.08), frameMat);
  const pictureMat = new THREE.MeshStandardMaterial({ color: 0xffffff, roughness: 0.8 });
  const picture = new THREE.Mesh(new THREE.PlaneGeometry(1, 1), pictureMat);
  picture.position.z = 0.045;
  const setSize = (/** @type {number} */ w, /** @type {number} */ h) => {
    picture.scale.set(w, h, 1);
    frame.scale.set(w + 0.22, h + 0.22, 1);
  };
  setSize(maxW, maxH);
  holder.add(frame, picture);
  const title = String(image.title || "");
  if (title) {
    const plaque = new THREE.Mesh(
      new THREE.PlaneGeometry(1.1, 0.2),
      new THREE.MeshBasicMaterial({ map: plaqueTexture(title) }),
    );
    plaque.position.set(0, -maxH / 2 - 0.35, 0.02);
    holder.add(plaque);
  }
  group.add(holder);
  if (image.url) {
    loader.load(
      image.url,
      (tex) => {
        tex.colorSpace = THREE.SRGBColorSpace;
        tex.anisotropy = 4;
        const iw = tex.image && tex.image.width ? tex.image.width : 4;
        const ih = tex.image && tex.image.height ? tex.image.height : 3;
        const s = Math.min(maxW / iw, maxH / ih);
        setSize(iw * s, ih * s);
        pictureMat.map = tex;
        pictureMat.needsUpdate = true;
        if (onLoaded) onLoaded(true);
      },
      undefined,
      () => {
        pictureMat.color.set(0x777777);
        if (onLoaded) onLoaded(false);
      },
    );
  }
  return holder;
}

/**
 * Builds the room for `images` ([{ url, title }]) into `scene`. Returns
 * { half, pictures, loaded: Promise resolving when every picture loaded or failed }.
 * @param {THREE.Scene} scene
 * @param {GalleryImage[] | unknown} images
 * @returns {BuiltRoom}
 */
export function buildGallery(scene, images) {
  const list = Array.isArray(images) ? images : [];
  const half = roomHalfSize(list.length);
  scene.background = new THREE.Color(0xbfd4e6);
  scene.fog = new THREE.Fog(0xbfd4e6, 60, 160);

  const ground = new THREE.Mesh(
    new THREE.PlaneGeometry(240, 240),
    new THREE.MeshStandardMaterial({ color: 0x7d8b6a, roughness: 1 }),
  );
  ground.rotation.x = -Math.PI / 2;
  ground.position.y = -0.02;
  scene.add(ground);

  const tex = floorTexture();
  tex.repeat.set(half / 4, half / 4);
  const floor = new THREE.Mesh(
    new THREE.PlaneGeometry(2 * half, 2 * half),
    new THREE.MeshStandardMaterial({ map: tex, roughness: 0.85 }),
  );
  floor.rotation.x = -Math.PI / 2;
  scene.add(floor);

  const room = new THREE.Group();
  addWalls(room, half);
  scene.add(room);
  addLights(scene, half);

  const loader = new THREE.TextureLoader();
  /** @type {THREE.Group[]} */
  const pictures = [];
  /** @type {Promise<boolean>[]} */
  const waits = [];
  list.forEach((image, i) => {
    waits.push(
      new Promise((resolve) => {
        pictures.push(addPicture(room, loader, image, pictureSlot(i, list.length, half), resolve));
        if (!image.url) resolve(false);
      }),
    );
  });
  if (!list.length) {
    const holder = new THREE.Group();
    const board = new THREE.Mesh(
      new THREE.PlaneGeometry(3, 2.25),
      new THREE.MeshStandardMaterial({ map: placeholderTexture() }),
    );
    holder.add(board);
    holder.position.set(0, PICTURE_Y, half - WALL_THICKNESS / 2 - 0.05);
    holder.rotation.y = Math.PI;
    room.add(holder);
  }
  return { half, pictures, loaded: Promise.all(waits) };
}
