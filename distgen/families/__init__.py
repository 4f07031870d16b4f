"""The family registry: short name -> family class (one file each)."""
from distgen.families.acgan import ACGAN
from distgen.families.cgan import CGAN
from distgen.families.classifier import Classifier
from distgen.families.cyclegan import CycleGAN
from distgen.families.dann import DANN
from distgen.families.dcgan import DCGAN
from distgen.families.lsgan import LSGAN
from distgen.families.sagan import SAGAN
from distgen.families.stargan import StarGAN
from distgen.families.vae import VAE
from distgen.families.wgan_gp import WGANGP

FAMILIES = {
    "acgan": ACGAN,
    "cgan": CGAN,
    "classifier": Classifier,
    "cyclegan": CycleGAN,
    "dann": DANN,
    "dcgan": DCGAN,
    "lsgan": LSGAN,
    "sagan": SAGAN,
    "stargan": StarGAN,
    "vae": VAE,
    "wgan_gp": WGANGP,
}
