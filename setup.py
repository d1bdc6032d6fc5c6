from setuptools import find_packages, setup

setup(
    name="vae_visdom",
    version="0.1.0",
    description="Train Variational Autoencoders and watch (and steer) them live in visdom.",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["vae_visdom", "vae_visdom.*"]),
    package_data={"vae_visdom.serve": ["assets-*.json"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy>=1.24",
        "pillow>=9",
        "visdom>=0.2.4",
        "tornado<6.6",
        "tqdm>=4.60",
    ],
    extras_require={"test": ["pytest>=7", "selenium>=4.10", "websocket-client>=1.5", "build>=1"],
                    "sweep": ["ray[tune]>=2.40"]},  # `vae-visdom sweep` runs its trials on Ray Tune
    entry_points={"console_scripts": ["vae-visdom=vae_visdom.cli:main"]},
)
