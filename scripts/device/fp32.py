"""Cast the carried fp16 copy of all-MiniLM-L6-v2 back to fp32 (the device's carry limit is 64 MiB)."""
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.name != "model.safetensors":
        shutil.copy(f, dst / f.name)
sd = load_file(src / "model.safetensors")
save_file({k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}, dst / "model.safetensors",
          metadata={"format": "pt"})
print("fp32 model at", dst)
