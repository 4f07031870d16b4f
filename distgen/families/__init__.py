"""The family registry: short name -> family class (one file each)."""
from distgen.families.acgan import ACGAN
from distgen.families.classifier import Classifier
from distgen.families.dcgan import DCGAN
from distgen.families.wgan_gp import WGANGP

FAMILIES = {
    "acgan": ACGAN,
    "classifier": Classifier,
    "dcgan": DCGAN,
    "wgan_gp": WGANGP,
}

