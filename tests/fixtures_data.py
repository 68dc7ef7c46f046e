"""Small raw layouts with real JPEGs for the acquire/parse/validate/check tests."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np

cv2.setNumThreads(1)


def jpeg(seed: int, size: int = 64) -> bytes:
    """A distinct real JPEG: random blocks, so dHashes differ between seeds."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = cv2.resize(small, (size, size), interpolation=cv2.INTER_NEAREST)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def resized_jpeg(seed: int, size: int = 64, to: int = 80) -> bytes:
    img = cv2.imdecode(np.frombuffer(jpeg(seed, size), np.uint8), cv2.IMREAD_COLOR)
    ok, buf = cv2.imencode(".jpg", cv2.resize(img, (to, to)), [cv2.IMWRITE_JPEG_QUALITY, 75])
    return buf.tobytes()


def corrupt(data: bytes) -> bytes:
    b = bytearray(data)
    b[2:300] = bytes((i * 37) % 256 for i in range(298))
    return bytes(b)


DF_CLASSES = [("floral", 1), ("a line", 3), ("cotton knit", 2), ("crew neck", 4), ("boho chic", 5), ("stripe", 1)]


def write_deepfashion(root: Path, n: int = 12, anno: str = "Anno", bom_crlf: bool = True, bad_line: bool = True) -> dict:
    """Release layout: Anno/list_attr_cloth.txt, Anno/list_attr_img.txt, Eval/list_eval_partition.txt,
    Img/img.zip. Image 3 is corrupt, 4 truncated, 5 missing from the zip, 6 an exact copy of 0,
    7 a resized copy of 1; the bad-columns line (if any) is the last data line."""
    root = Path(root)
    nl = "\r\n" if bom_crlf else "\n"
    names = [f"img/Floral Print_Dress/img_{i:08d}.jpg" if i % 2 else f"img/Crew_Tee/img_{i:08d}.jpg" for i in range(n)]
    cloth = [str(len(DF_CLASSES)), "attribute_name  attribute_type"] + [f"{c:<20}{t}" for c, t in DF_CLASSES]
    rows = [str(n + (1 if bad_line else 0)), "image_name  attribute_labels"]
    for i, name in enumerate(names):
        vals = ["-1"] * len(DF_CLASSES)
        vals[i % len(DF_CLASSES)] = "1"
        if i == 2:
            vals[1] = "0"
        rows.append(name + "  " + " ".join(f"{v:>2}" for v in vals))
    bad_lineno = None
    if bad_line:
        rows.append("img/Crew_Tee/img_99999999.jpg  1 -1 1")
        bad_lineno = len(rows)
    part = [str(n), "image_name  evaluation_status"]
    for i, name in enumerate(names):
        part.append(f"{name}  {['train', 'val', 'test'][i % 3] if i > 2 else 'train'}")
    bom = "\ufeff" if bom_crlf else ""
    (root / anno).mkdir(parents=True, exist_ok=True)
    (root / "Eval").mkdir(parents=True, exist_ok=True)
    (root / anno / "list_attr_cloth.txt").write_bytes((bom + nl.join(cloth) + nl).encode())
    (root / anno / "list_attr_img.txt").write_bytes((bom + nl.join(rows) + nl).encode())
    (root / "Eval" / "list_eval_partition.txt").write_bytes((nl.join(part) + nl).encode())
    (root / "Img").mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(root / "Img" / "img.zip", "w") as zf:
        for i, name in enumerate(names):
            data = jpeg(i)
            if i == 3:
                data = corrupt(data)
            elif i == 4:
                data = data[: len(data) // 2]
            elif i == 5:
                continue
            elif i == 6:
                data = jpeg(0)
            elif i == 7:
                data = resized_jpeg(1)
            zf.writestr(name, data)
    return {"names": names, "bad_line": bad_lineno}


def write_fashionai_zip(path: Path, n: int = 10) -> dict:
    """fashionAI_attributes_train1.zip: row 2 has an 'm', row 3 no 'y', image 4 corrupt."""
    top = "fashionAI_attributes_train1"
    rows, members = [], {}
    for i in range(n):
        name = f"Images/skirt_length_labels/img {i:03d}.jpg"
        label = ["n"] * 6
        label[i % 6] = "y"
        if i == 2:
            label[(i + 1) % 6] = "m"
        if i == 3:
            label = ["n"] * 6
        rows.append(f"{name},skirt_length_labels,{''.join(label)}")
        members[f"{top}/{name}"] = corrupt(jpeg(100 + i)) if i == 4 else jpeg(100 + i)
    members[f"{top}/Annotations/label.csv"] = ("\r\n".join(rows) + "\r\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return {"rows": rows}


def write_asen_folder(root: Path, n_valid: int = 10, with_images: bool = True, urls: bool = False) -> list[str]:
    """A DARN-like ASEN folder: meta.json, filenames_{train,valid}.txt, label_train.txt,
    query_valid.txt, candidate_valid.txt (+ urls.txt and pic/ when asked)."""
    import json

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    meta = {"DARN": {"ATTRIBUTES": ["clothes color", "sleeve length"], "ATTRIBUTES_NUM": {"clothes color": 4, "sleeve length": 3}}}
    (root / "meta.json").write_text(json.dumps(meta))
    train = [f"pic/{100 + i}/t {i}.jpg" for i in range(6)]
    valid = [f"pic/{200 + i}/v{i}.jpg" for i in range(n_valid)]
    (root / "filenames_train.txt").write_text("\n".join(train) + "\n")
    (root / "filenames_valid.txt").write_text("\n".join(valid) + "\n")
    (root / "label_train.txt").write_text("\n".join(f"{i} 0 {i % 4} 1 {i % 3}" for i in range(6)) + "\n")
    nq = n_valid // 5
    (root / "query_valid.txt").write_text("\n".join(f"{i} {i % 2} {i % 3}" for i in range(nq)) + "\n")
    (root / "candidate_valid.txt").write_text("\n".join(f"{i} {i % 2} {i % 3}" for i in range(nq, n_valid)) + "\n")
    allp = train + valid
    if with_images:
        for k, p in enumerate(allp):
            (root / p).parent.mkdir(parents=True, exist_ok=True)
            (root / p).write_bytes(jpeg(300 + k))
    if urls:
        from urllib.parse import quote

        (root / "urls.txt").write_text("".join(f"{p} {quote(p)}\n" for p in allp))
    return allp
